"""Training throughput: the per-step work of ``seq2seq.train`` (fetch batch, then the training step itself,
:func:`seq2seq.training.step.train_step`: autocast forward, loss / tokens backward, clip, Adam step) timed over steps that alternate between variants, reported as tokens/s, sentence
pairs/s, step time, peak memory and achieved GFLOP/s (analytic FLOPs, checked against FlopCounterMode on one
batch) as a fraction of the GEMM peak."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import torch

from seq2seq.token_batches import TokenBatchSampler, iterate_batches
from seq2seq.bench.flops import counted_training_flops, training_flops
from seq2seq.bench.machine import sync
from seq2seq.bench.workload import Workload
from seq2seq.config import Config
from seq2seq.model import Seq2Seq, build_model
from seq2seq.training.optimizer import build_optimizer
from seq2seq.training.step import Learner, StepSettings, train_step, training_work
from seq2seq.dtype_auto import choose_autocast


class TrainingBench:
    """One variant's training benchmark, timed in slices so that variants can take turns (``--rounds``): a
    neighbour's burst of load or a slower second half of the run then falls on every variant alike.

    Built in ``cfg.train.dtype`` (``auto`` resolved as training resolves it) and warmed up with ``warmup``
    untimed steps; ``run(steps)`` times more steps; ``figures()`` sums every timed slice."""

    def __init__(self, cfg: Config, work: Workload, device: torch.device, warmup: int):
        torch.manual_seed(cfg.train.seed)
        self.cfg, self.work, self.device = cfg, work, device
        self.model = build_model(cfg.model, work.src_tok.vocab_size, work.tgt_tok.vocab_size).to(device).train()
        self.amp = choose_autocast(cfg.train.dtype, device, self.model, training_work(cfg.train.max_tokens),
                                   cfg.data.cache_dir)
        self.learner = Learner(self.model, build_optimizer(cfg.train, self.model.parameters()),
                               StepSettings.of(cfg.train), device, self.amp)
        sampler = TokenBatchSampler.from_dataset(work.train_data, cfg.train.max_tokens, cfg.train.seed)
        self.batches = _endless_batches(work.train_data, sampler)
        self.check = flop_check(cfg, work, self.model, next(self.batches).to(device))
        self.seconds, self.steps = 0.0, 0
        self.totals = {"target": 0, "source": 0, "pairs": 0, "sentences": 0}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(warmup):
            self._step()
        sync(device)

    def _step(self):
        batch = next(self.batches).to(self.device)
        train_step(self.learner, [batch], batch.num_tgt_tokens)  # reads the loss (a device sync), as training does
        return batch

    def run(self, steps: int) -> None:
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            batch = self._step()
            src_lengths, tgt_lengths = batch.src_lengths.cpu(), batch.tgt_lengths.cpu()
            self.totals["target"] += batch.num_tgt_tokens
            self.totals["source"] += int(src_lengths.sum())
            self.totals["pairs"] += int((src_lengths * tgt_lengths).sum())
            self.totals["sentences"] += batch.size
        sync(self.device)
        self.seconds += time.perf_counter() - start
        self.steps += steps

    def figures(self, peaks: dict[str, float]) -> dict[str, Any]:
        return training_figures(self.cfg, self.work, self.device, self.amp, self.steps, self.seconds, self.totals,
                                self.check, peaks)


def bench_training(benches: list[TrainingBench], steps: int, rounds: int) -> None:
    """``steps`` timed steps per variant, in ``rounds`` turns that alternate between the variants."""
    rounds = max(1, min(rounds, steps))
    for index in range(rounds):
        share = steps * (index + 1) // rounds - steps * index // rounds
        for bench in benches:
            bench.run(share)


def dtype_name(amp: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]


def _endless_batches(dataset, sampler: TokenBatchSampler):
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from iterate_batches(dataset, sampler)
        epoch += 1


def training_figures(cfg: Config, work: Workload, device: torch.device, amp: torch.dtype | None, steps: int,
                     seconds: float, totals: dict[str, int], check: dict[str, Any], peaks: dict[str, float]) -> dict:
    vocab = (work.src_tok.vocab_size, work.tgt_tok.vocab_size)
    flops = training_flops(cfg.model, *vocab, totals["source"], totals["target"], totals["pairs"], totals["sentences"])
    gflops = flops / seconds / 1e9
    peak = peaks["bf16" if amp in (torch.bfloat16, torch.float16) else "fp32"]
    if device.type == "cuda":
        memory_mib, memory_kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    else:  # ru_maxrss: KiB on Linux, bytes on macOS
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        memory_mib, memory_kind = rss / (2**20 if sys.platform == "darwin" else 2**10), "process peak RSS, all variants"
    return {
        "compute": dtype_name(amp),
        "steps": steps,
        "seconds": seconds,
        "sentences_per_s": totals["sentences"] / seconds,
        "target_pieces_per_sentence": totals["target"] / totals["sentences"],
        "step_seconds": seconds / steps,
        "target_tokens": totals["target"],
        "target_tokens_per_batch": totals["target"] / steps,
        "source_tokens": totals["source"],
        "target_tokens_per_s": totals["target"] / seconds,
        "src_tgt_tokens_per_s": (totals["target"] + totals["source"]) / seconds,
        "peak_memory_mib": memory_mib,
        "peak_memory_kind": memory_kind,
        "training_flops": flops,
        "mflop_per_target_token": flops / totals["target"] / 1e6,
        "achieved_gflops": gflops,
        "fraction_of_gemm_peak": gflops / peak,
        "flop_check": check,
    }


def flop_check(cfg: Config, work: Workload, model: Seq2Seq, batch) -> dict[str, Any]:
    """Analytic FLOPs of one batch as executed (padded decoder positions) against FlopCounterMode."""
    counted, per_module = counted_training_flops(model, batch)
    model.zero_grad(set_to_none=True)
    b, s, t = batch.size, batch.src.size(1), batch.tgt_in.size(1)
    packed = cfg.model.rnn_impl == "fused"  # torch's RNN skips padding; the textbook cells step over it
    src_positions = int(batch.src_lengths.sum()) if packed else b * s
    vocab = (work.src_tok.vocab_size, work.tgt_tok.vocab_size)
    analytic = training_flops(cfg.model, *vocab, src_positions, b * t, b * s * t, b, key_positions=b * s)
    note = ""
    if not 0.9 < analytic / max(counted, 1) < 1.1:
        note = "analytic and counted FLOPs differ by more than 10%"
        if cfg.model.rnn_type == "lstm" and packed:
            note += " (FlopCounterMode does not see torch's fused oneDNN LSTM kernel on the CPU: it undercounts)"
    return {"batch_sentences": b, "batch_target_positions": b * t, "analytic": analytic, "counted": counted,
            "ratio": analytic / max(counted, 1), "counted_per_module": per_module, "note": note}
