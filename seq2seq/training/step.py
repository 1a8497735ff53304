"""One optimizer step of training: this rank's share of the step's batches, the forward and backward passes
(gradient accumulation, and under torchrun the gradient all-reduce), the agreement between ranks, the update.
Also the loss and throughput window the training log reports. The loop that calls these is :mod:`seq2seq.train`.
"""

from __future__ import annotations

import contextlib
import math
import time

import torch

from seq2seq.batches import Batch, batch_view, read_batch
from seq2seq.training.run import Run


def fetch_batch(dataset, indices: list[int]) -> Batch:
    """The batch of ``indices``, padded straight from the memory-mapped Arrow cache."""
    return read_batch(batch_view(dataset), indices)


def step_share(group: list[list[int]], rank: int, accumulate: int) -> tuple[list[list[int]], bool]:
    """This rank's batches of a step's ``group`` (``world_size * accumulate`` batches, fewer at the end of an
    epoch): the ``rank``-th run of ``accumulate``, and whether they count. A rank whose share is empty (a short last
    group) trains on the group's first batch with weight 0, so that it still joins the gradient all-reduce."""
    share = group[rank * accumulate : (rank + 1) * accumulate]
    return (share, True) if share else (group[:1], False)


def train_step(run: Run, micro_batches: list[Batch], step_tokens: int, counts: bool = True) -> float | None:
    """One optimizer step (gradient accumulation over ``micro_batches``, and over the ranks under torchrun).

    ``step_tokens`` is the number of target tokens of the whole step, every rank's batches included: the loss is
    summed over them and divided by it, so W ranks equal one process accumulating their batches. Returns the mean
    loss per target token, or None when the loss was not finite (on any rank) and the step was skipped.
    """
    tcfg, model, optimizer, dist = run.cfg.train, run.model, run.optimizer, run.dist
    factor = (dist.world_size if counts else 0) / step_tokens  # DDP averages the ranks' gradients: x W makes a sum
    optimizer.zero_grad(set_to_none=True)
    local_loss = 0.0
    for i, batch in enumerate(micro_batches):
        no_sync = dist.enabled and i < len(micro_batches) - 1  # the gradients are all-reduced once, after the last
        with run.loss_module.no_sync() if no_sync else contextlib.nullcontext():
            with torch.autocast(run.device.type, dtype=run.amp, enabled=run.amp is not None):
                loss = run.loss_module(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out,
                                       tcfg.label_smoothing, tcfg.teacher_forcing_ratio)
            with dist.reporting("averaging gradients"):
                run.scaler.scale(loss * factor).backward()
        local_loss += float(loss.detach()) if counts else 0.0
    step_loss = run.agree(local_loss).loss
    if not math.isfinite(step_loss):
        optimizer.zero_grad(set_to_none=True)
        return None
    if tcfg.clip_norm > 0:
        run.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_norm)
    run.scaler.step(optimizer)
    run.scaler.update()
    if run.average is not None:
        run.average.update(model)
    return step_loss / step_tokens


class ThroughputWindow:
    """Loss and tokens/s over the steps since the last log line (validation time excluded)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start, self.target_tokens, self.all_tokens, self.loss, self.steps = time.perf_counter(), 0, 0, 0.0, 0

    def add(self, loss: float, target_tokens: int, source_tokens: int) -> None:
        self.target_tokens += target_tokens
        self.all_tokens += target_tokens + source_tokens
        self.loss += loss
        self.steps += 1

    def record(self) -> dict[str, float]:
        seconds = max(time.perf_counter() - self.start, 1e-9)
        mean_loss = self.loss / max(self.steps, 1)
        return {"loss": round(mean_loss, 4), "ppl": round(math.exp(min(mean_loss, 50)), 2),
                "tokens_per_s": round(self.target_tokens / seconds, 1),
                "src_tgt_tokens_per_s": round(self.all_tokens / seconds, 1)}
