"""One optimizer step of training, written once: :func:`train_step` is what ``python -m seq2seq.train`` runs
each step, what the training benchmark (:mod:`seq2seq.bench.training_speed`) times, and what ``dtype: auto``
(:mod:`seq2seq.dtype_auto`) measures (:func:`training_work`). It does the forward and backward passes (gradient
accumulation, and under torchrun the gradient all-reduce), the agreement between ranks, gradient clipping, the
update and the weight average. :class:`Learner` is what the step changes. Also this rank's share of a step's
batches, and the loss and throughput window the training log reports. The loop that calls these is :mod:`seq2seq.train`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from seq2seq.token_batches import Batch
from seq2seq.config import TrainConfig
from seq2seq.model import Seq2Seq
from seq2seq.dtype_auto import TimedWork, random_ids
from seq2seq.training.distributed import Distributed
from seq2seq.training.optimizer import WeightAverage


@dataclass(frozen=True)
class StepSettings:
    """The ``train.*`` settings a step reads."""

    label_smoothing: float = 0.0
    teacher_forcing_ratio: float = 1.0
    clip_norm: float = 0.0  #: 0: no clipping

    @classmethod
    def of(cls, cfg: TrainConfig) -> StepSettings:
        return cls(cfg.label_smoothing, cfg.teacher_forcing_ratio, cfg.clip_norm)


@dataclass
class Learner:
    """The model and what a training step changes with it: optimizer, gradient scaler (fp16) and weight average,
    in the autocast dtype ``amp`` (None = fp32) on ``device``.

    ``forward`` is what the step calls for the loss: the model itself, or under torchrun the model wrapped in
    DistributedDataParallel (``ranks``), which all-reduces the gradients during the backward pass.
    """

    model: Seq2Seq
    optimizer: torch.optim.Optimizer
    settings: StepSettings
    device: torch.device
    amp: torch.dtype | None = None
    average: WeightAverage | None = None
    ranks: Distributed = field(default_factory=Distributed)
    scaler: torch.amp.GradScaler | None = None  #: None: built from ``amp`` (enabled for fp16 only)
    forward: torch.nn.Module | None = None  #: None: ``model`` (see :meth:`wrap_for_ranks`)

    def __post_init__(self) -> None:
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        if self.forward is None:
            self.forward = self.model

    def wrap_for_ranks(self) -> None:
        """Under several processes, wrap the model in DistributedDataParallel (one process: nothing)."""
        if self.ranks.enabled:
            self.forward = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                gradient_as_bucket_view=True)


def train_step(learner: Learner, micro_batches: list[Batch], step_tokens: int, counts: bool = True,
               agree: Callable[[float], float] | None = None) -> float | None:
    """One optimizer step (gradient accumulation over ``micro_batches``, and over the ranks under torchrun).

    ``step_tokens`` is the number of target tokens of the whole step, every rank's batches included: the loss is
    summed over them and divided by it, so W ranks equal one process accumulating their batches. A rank whose
    batches do not ``count`` (see :func:`step_share`) joins the all-reduce with weight 0. ``agree`` turns this
    rank's summed loss into the step's (every rank's; see ``Run.agree``) before anything is updated, so that all
    ranks skip a non-finite step alike. Returns the mean loss per target token, or None when the loss was not
    finite (on any rank) and the step was skipped.
    """
    model, optimizer, settings, ranks = learner.model, learner.optimizer, learner.settings, learner.ranks
    factor = (ranks.world_size if counts else 0) / step_tokens  # DDP averages the ranks' gradients: x W makes a sum
    optimizer.zero_grad(set_to_none=True)
    local_loss = 0.0
    for i, batch in enumerate(micro_batches):
        no_sync = ranks.enabled and i < len(micro_batches) - 1  # the gradients are all-reduced once, after the last
        with learner.forward.no_sync() if no_sync else contextlib.nullcontext():
            with torch.autocast(learner.device.type, dtype=learner.amp, enabled=learner.amp is not None):
                _, loss = learner.forward(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out,
                                          label_smoothing=settings.label_smoothing,
                                          teacher_forcing_ratio=settings.teacher_forcing_ratio)
            with ranks.reporting("averaging gradients"):
                learner.scaler.scale(loss * factor).backward()
        local_loss += float(loss.detach()) if counts else 0.0
    step_loss = agree(local_loss) if agree is not None else local_loss
    if not math.isfinite(step_loss):
        optimizer.zero_grad(set_to_none=True)
        return None
    if settings.clip_norm > 0:
        learner.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
    learner.scaler.step(optimizer)
    learner.scaler.update()
    if learner.average is not None:
        learner.average.update(model)
    return step_loss / step_tokens


def training_work(positions: int) -> TimedWork:
    """What ``dtype: auto`` (:mod:`seq2seq.dtype_auto`) times for training: one :func:`train_step`, as training runs
    it (label smoothing, clipping, Adam), on a batch of ``positions`` positions (sentences of 20 source + 20
    target pieces; its probe on a few of those sentences)."""
    length = 20

    def prepare(model: Seq2Seq, device: torch.device, amp: torch.dtype | None, rows: int) -> Callable[[], None]:
        src = random_ids(rows, length, model.encoder.embedding.num_embeddings, device)
        tgt = random_ids(rows, length, model.decoder.embedding.num_embeddings, device)
        lengths = torch.full((rows,), length, dtype=torch.long, device=device)
        batch = Batch(src, lengths, tgt, tgt, lengths)
        model.train()
        learner = Learner(model, torch.optim.Adam(model.parameters(), lr=1e-4),
                          StepSettings(label_smoothing=0.1, clip_norm=1.0), device, amp)
        return lambda: train_step(learner, [batch], rows * length)

    return TimedWork("train", str(positions), "step", max(1, positions // (2 * length)), prepare,
                     what=f"a training step of {positions} positions (train.max_tokens)",
                     skip="set train.dtype (--set train.dtype=fp32, or bf16)", budget=10.0)


def step_share(group: list[list[int]], rank: int, accumulate: int) -> tuple[list[list[int]], bool]:
    """This rank's batches of a step's ``group`` (``world_size * accumulate`` batches, fewer at the end of an
    epoch): the ``rank``-th run of ``accumulate``, and whether they count. A rank whose share is empty (a short last
    group) trains on the group's first batch with weight 0, so that it still joins the gradient all-reduce."""
    share = group[rank * accumulate : (rank + 1) * accumulate]
    return (share, True) if share else (group[:1], False)


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
