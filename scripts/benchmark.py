"""Speed of training and decoding on the reference workload (Multi30k en->de, configs/multi30k_en_de.yaml).

    python scripts/benchmark.py                              # full run: 50 training steps, 1000 test sentences
    python scripts/benchmark.py --quick                      # tiny run (CI): a few steps, 64 sentences
    python scripts/benchmark.py --model runs/multi30k_en_de  # decode with a trained model
    python scripts/benchmark.py --compare fp32,bf16,auto     # variants in one process, ratios to the first
    python scripts/benchmark.py --joeynmt 150                # and JoeyNMT 2.3.0 trained here, side by side
    python scripts/benchmark.py --compare "fused:model.rnn_impl=fused,textbook:model.rnn_impl=reference"

Measured in one process: the GEMM peak of this machine (fp32 and bf16 ``torch.matmul``), training throughput
(the per-step work of ``seq2seq.train``: fetch batch, autocast forward, loss / tokens backward, clip, Adam step)
with achieved GFLOP/s from an analytic FLOP count (cross-checked with ``FlopCounterMode``), and greedy and beam
decoding of the first test split (throughput at ``--batch-size`` and batch-1 latency). Prints tables and writes
everything to ``--json``. Without ``--model`` the decoded model is the one just benchmarked (a few training
steps: its outputs are long and poor, so read decoding figures per generated token).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from seq2seq.api import Translator, resolve_device, translate_ids
from seq2seq.batches import TokenBatchSampler, iterate_batches
from seq2seq.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_state_into, load_weights
from seq2seq.config import Config, ConfigError, ModelConfig, load_config
from seq2seq.data import read_split, tokenize_split
from seq2seq.model import Seq2Seq, build_model
from seq2seq.optim import build_optimizer
from seq2seq.precision import choose_autocast
from seq2seq.prepare import cached_tokenizers
from seq2seq.tokenizer import (
    Tokenizer,
    load_tokenizers,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "multi30k"
#: compute dtypes a variant may ask for; ``auto`` resolves per machine by measurement (seq2seq/precision.py)
DTYPES = ("fp32", "bf16", "tf32", "fp16", "auto")
PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PEER_SCRIPT = REPO_ROOT.parent / "shared" / "peers" / "joeynmt" / "speed.sh"
QUICK = {"steps": 3, "warmup": 1, "rounds": 1, "decode_sentences": 64, "latency_sentences": 10}
#: quick mode also shrinks the work (each unless --set gives that key): small vocabularies, smaller batches
QUICK_OVERRIDES = ["tokenizer.vocab_size=1000", "tokenizer.input_sentence_size=10000", "train.max_tokens=1024"]
FULL = {"steps": 50, "warmup": 5, "rounds": 5, "decode_sentences": 0, "latency_sentences": 100}


# ---------------------------------------------------------------------------------------------- FLOPs
def forward_flops(
    model_cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, src_tokens: int, tgt_tokens: int,
    attention_pairs: int | None = None, sentences: int = 0, key_positions: int | None = None,
) -> dict[str, int]:
    """Matmul FLOPs (2·m·n·k per GEMM) of one teacher-forced forward pass, by component.

    Args:
        src_tokens: source positions the encoder RNN runs over; tgt_tokens: decoder positions.
        attention_pairs: (target position, source position) pairs scored; default ``src_tokens * tgt_tokens``
            (exact for one sentence; for a batch pass the sum over sentences of ``src_len * tgt_len``).
        sentences: sentences (for the bridge, once per sentence); key_positions: positions whose attention
            keys are projected (default ``src_tokens``).
    Embedding lookups, elementwise ops, softmax and the loss are not counted (no GEMMs; vocab size only
    enters through the output projection).
    """
    m = model_cfg
    gates = {"gru": 3, "lstm": 4}[m.rnn_type]
    dirs = 2 if m.bidirectional else 1
    memory = dirs * m.encoder_hidden_size
    hidden = m.decoder_hidden_size
    attn_vector = m.emb_size if m.tie_embeddings else hidden
    pairs = src_tokens * tgt_tokens if attention_pairs is None else attention_pairs
    keys = src_tokens if key_positions is None else key_positions

    def rnn(input_size: int, hidden_size: int, layers: int, directions: int) -> int:
        """Per position: input GEMM + recurrent GEMM for every layer and direction."""
        total = 0
        for layer in range(layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            total += directions * 2 * gates * hidden_size * (layer_input + hidden_size)
        return total

    decoder_input = m.emb_size + (attn_vector if m.input_feeding else 0)
    bahdanau = m.attention == "bahdanau"  # Bahdanau's MLP has ``hidden`` units
    return {
        "encoder_rnn": src_tokens * rnn(m.emb_size, m.encoder_hidden_size, m.encoder_layers, dirs),
        "attention_keys": keys * 2 * memory * hidden if m.attention != "luong_dot" else 0,
        "bridge": sentences * m.decoder_layers * 2 * memory * hidden * (2 if m.rnn_type == "lstm" else 1)
        if m.bridge == "bridge" else 0,
        "decoder_rnn": tgt_tokens * rnn(decoder_input, hidden, m.decoder_layers, 1),
        "attention_query": tgt_tokens * 2 * hidden * hidden if bahdanau else 0,
        "attention_scores": pairs * 2 * hidden,  # Bahdanau: energy v^T tanh(.); Luong: q . k
        "attention_context": pairs * 2 * memory,
        "attn_vector_layer": tgt_tokens * 2 * (hidden + memory) * attn_vector,
        "output_layer": tgt_tokens * 2 * attn_vector * tgt_vocab_size,
    }


def training_flops(
    model_cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, src_tokens: int, tgt_tokens: int,
    attention_pairs: int | None = None, sentences: int = 0, key_positions: int | None = None,
) -> int:
    """Matmul FLOPs of one training step: forward + backward (≈ 2 × forward: grads of inputs and weights)."""
    parts = forward_flops(model_cfg, src_vocab_size, tgt_vocab_size, src_tokens, tgt_tokens, attention_pairs,
                          sentences, key_positions)
    return 3 * sum(parts.values())


def counted_training_flops(model: Seq2Seq, batch) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward + backward as ``torch.utils.flop_counter.FlopCounterMode`` counts them
    (total, and per module path). Leaves gradients in the model: zero them afterwards."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss, tokens = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, 0.1)
        (loss / tokens).backward()
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return counter.get_total_flops(), per_module


# ---------------------------------------------------------------------------------------------- GEMM peak
def gemm_peak(device: torch.device, dtype: torch.dtype, size: int, reps: int) -> float:
    """GFLOP/s of a ``size`` x ``size`` matmul (best of ``reps`` after two warmup runs)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for rep in range(reps + 2):
        sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        if rep >= 2:
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def cpu_name() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        return next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------- variants
@dataclass
class Variant:
    """A named set of config overrides and a compute dtype (``fp32`` | ``bf16``)."""

    name: str
    overrides: list[str] = field(default_factory=list)
    dtype: str = "fp32"


def parse_variants(spec: str | None, default_dtype: str) -> list[Variant]:
    """``fp32,bf16`` or ``name:section.key=value;section.key=value,...`` (``dtype=bf16`` allowed as a key)."""
    if not spec:
        return [Variant("baseline", [], default_dtype)]
    variants = []
    for item in _split_top_level(spec):
        name, _, body = item.partition(":")
        name = name.strip()
        if not body and name in DTYPES:  # "fp32,bf16,auto"
            variants.append(Variant(name, [], name))
            continue
        if not body and "=" in name:  # a bare override names itself
            name, body = name, name
        variant = Variant(name, [], default_dtype)
        for text in filter(None, (part.strip() for part in body.split(";"))):
            if text.startswith("dtype="):
                variant.dtype = text.split("=", 1)[1].strip()
                if variant.dtype not in DTYPES:
                    raise ConfigError(f"--compare {name}: dtype must be one of {', '.join(DTYPES)}, got {variant.dtype!r}")
            else:
                variant.overrides.append(text)
        variants.append(variant)
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"--compare: variant names must differ, got {names}")
    return variants


def _split_top_level(spec: str) -> list[str]:
    """Split on commas outside brackets (override values may be YAML lists)."""
    items, depth, current = [], 0, ""
    for char in spec:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [item.strip() for item in items if item.strip()]


# ---------------------------------------------------------------------------------------------- workload
@dataclass
class Workload:
    """Tokenizers, the tokenized training split and the test sources for one data + tokenizer config."""

    src_tok: Tokenizer
    tgt_tok: Tokenizer
    train_data: Any
    test_split: str
    test_sources: list[str]


def load_workload(cfg: Config, model_dir: Path | None) -> Workload:
    raw_train = read_split(cfg.data, cfg.data.train_split)
    src_tok, tgt_tok = load_tokenizers(model_dir or cached_tokenizers(cfg, raw_train))
    train_data = tokenize_split(raw_train, src_tok, tgt_tok, cfg.data.cache_dir, cfg.data.max_length)
    test_split = cfg.data.test_splits[0] if cfg.data.test_splits else cfg.data.valid_split
    test_sources = list(read_split(cfg.data, test_split)["src"])
    return Workload(src_tok, tgt_tok, train_data, test_split, test_sources)


# ---------------------------------------------------------------------------------------------- training
class TrainingBench:
    """One variant's training benchmark, timed in slices so that variants can take turns (``--rounds``): a
    neighbour's burst of load or a slower second half of the run then falls on every variant alike.

    Built in ``cfg.train.dtype`` (``auto`` resolved as training resolves it) and warmed up with ``warmup``
    untimed steps; ``run(steps)`` times more steps; ``figures()`` sums every timed slice."""

    def __init__(self, cfg: Config, work: Workload, device: torch.device, warmup: int):
        torch.manual_seed(cfg.train.seed)
        self.cfg, self.work, self.device = cfg, work, device
        self.model = build_model(cfg.model, work.src_tok.vocab_size, work.tgt_tok.vocab_size).to(device).train()
        self.amp = choose_autocast(cfg.train.dtype, device, self.model, "train", cfg.data.cache_dir,
                                   cfg.train.max_tokens)
        self.optimizer = build_optimizer(cfg.train, self.model.parameters())
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
        cfg, batch = self.cfg, next(self.batches).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            loss, _ = self.model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out,
                                      cfg.train.label_smoothing, cfg.train.teacher_forcing_ratio)
        (loss / batch.num_tgt_tokens).backward()
        if cfg.train.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.clip_norm)
        self.optimizer.step()
        float(loss.detach())  # train.py reads the loss every step (a device sync)
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


# ---------------------------------------------------------------------------------------------- decoding
def bench_decoding(translator: Translator, sources: list[str], batch_size: int, latency_sentences: int) -> dict[str, Any]:
    """Greedy and beam throughput at ``batch_size`` and batch-1 latency, in the translator's compute dtype."""
    amp = translator.autocast_dtype
    src_ids = translator.encode_sources(sources)
    decode = dataclasses.replace(translator.cfg.decode, batch_size=batch_size)
    single = dataclasses.replace(translator.cfg.decode, batch_size=1)
    model, device = translator.model.eval(), translator.device
    results = {"compute": dtype_name(amp), "sentences": len(src_ids), "batch_size": batch_size, "tokens_counted": "output pieces incl. EOS "
               "of the returned (best) hypothesis; words = whitespace-separated words of the detokenized output"}
    for name, beam in (("greedy", 1), ("beam", translator.cfg.decode.beam_size)):
        translate_ids(model, src_ids[:8], decode, beam, device=device, autocast_dtype=amp)  # warm up
        with counting_steps(model.decoder) as steps:
            sync(device)
            start = time.perf_counter()
            hypotheses = translate_ids(model, src_ids, decode, beam, device=device, autocast_dtype=amp)
            sync(device)
            seconds = time.perf_counter() - start
        tokens = [h[0].tokens for h in hypotheses]
        words = sum(len(text.split()) for text in translator.tgt_tokenizer.decode(tokens))
        latencies = []
        for ids in src_ids[:latency_sentences]:
            sync(device)
            started = time.perf_counter()
            translate_ids(model, [ids], single, beam, device=device, autocast_dtype=amp)
            sync(device)
            latencies.append(time.perf_counter() - started)
        results[name] = {
            "beam_size": beam,
            "seconds": seconds,
            "sentences_per_s": len(src_ids) / seconds,
            "tokens_per_s": sum(len(t) + 1 for t in tokens) / seconds,
            "words_per_s": words / seconds,
            "mean_output_tokens": sum(len(t) + 1 for t in tokens) / len(tokens),
            "decoder_steps": steps["calls"],
            "hypothesis_steps_per_s": steps["rows"] / seconds,
            "latency_sentences": len(latencies),
            "latency_p50_ms": float(np.percentile(latencies, 50)) * 1000 if latencies else None,
            "latency_p95_ms": float(np.percentile(latencies, 95)) * 1000 if latencies else None,
        }
    return results


@contextmanager
def counting_steps(decoder):
    """Count ``decoder.step`` calls and the hypotheses (rows) they advance: a throughput figure that does not
    depend on how long the model's outputs are."""
    counts = {"calls": 0, "rows": 0}
    original = decoder.step

    def step(prev_tokens, *args, **kwargs):
        counts["calls"] += 1
        counts["rows"] += prev_tokens.size(0)
        return original(prev_tokens, *args, **kwargs)

    decoder.step = step
    try:
        yield counts
    finally:
        del decoder.step


def decoding_translator(cfg: Config, work: Workload, device: torch.device, model_dir: Path | None,
                        trained: Seq2Seq | None) -> Translator:
    """The benchmarked model, or the trained weights of ``model_dir`` (in this variant's model config)."""
    if model_dir is None:
        if trained is None:
            torch.manual_seed(cfg.train.seed)
            trained = build_model(cfg.model, work.src_tok.vocab_size, work.tgt_tok.vocab_size).to(device)
        return Translator(cfg, trained, work.src_tok, work.tgt_tok, device)
    model = build_model(cfg.model, work.src_tok.vocab_size, work.tgt_tok.vocab_size)
    load_state_into(model, load_weights(model_dir / WEIGHTS_FILE), model_dir / WEIGHTS_FILE)
    return Translator(cfg, model.to(device), work.src_tok, work.tgt_tok, device)


# ---------------------------------------------------------------------------------------------- profile
def profile(cfg: Config, work: Workload, model: Seq2Seq, device: torch.device, sources: list[str], rows: int) -> None:
    """Print torch.profiler's top ops (self time) for one training step and one beam batch."""
    amp = choose_autocast(cfg.train.dtype, device, model, "train", cfg.data.cache_dir, cfg.train.max_tokens)
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    sampler = TokenBatchSampler.from_dataset(work.train_data, cfg.train.max_tokens, cfg.train.seed)
    batch = next(iterate_batches(work.train_data, sampler)).to(device)
    optimizer = build_optimizer(cfg.train, model.parameters())
    model.train()
    with torch_profile(activities=activities) as prof:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss, _ = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, cfg.train.label_smoothing)
        (loss / batch.num_tgt_tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_norm)
        optimizer.step()
    print(f"\nprofile: one training step ({batch.size} sentences, {batch.num_tgt_tokens} target tokens)")
    print(prof.key_averages().table(sort_by=sort, row_limit=rows))
    translator = Translator(cfg, model, work.src_tok, work.tgt_tok, device)
    src_ids = translator.encode_sources(sources[:64])
    with torch_profile(activities=activities) as prof:
        translate_ids(translator.model, src_ids, dataclasses.replace(cfg.decode, batch_size=64),
                      cfg.decode.beam_size, device=device, autocast_dtype=amp)
    print(f"\nprofile: beam {cfg.decode.beam_size} over {len(src_ids)} sentences (one batch)")
    print(prof.key_averages().table(sort_by=sort, row_limit=rows))


# ---------------------------------------------------------------------------------------------- report
def print_variant(v: dict[str, Any], peaks: dict[str, float]) -> None:
    print(f"\n== {v['name']}: dtype {v['dtype']}, overrides {v['overrides'] or 'none'}")
    tr = v.get("train")
    if tr:
        check = tr["flop_check"]
        print(f"training ({tr['steps']} steps after warmup, {v['config']['train']['max_tokens']}-position batches, "
              f"compute {tr['compute']})")
        print(f"  target tokens/s          {tr['target_tokens_per_s']:10.1f}   (pieces + EOS)")
        print(f"  source+target tokens/s   {tr['src_tgt_tokens_per_s']:10.1f}")
        print(f"  sentence pairs/s         {tr['sentences_per_s']:10.1f}")
        print(f"  step time                {tr['step_seconds'] * 1000:10.1f} ms")
        print(f"  peak memory              {tr['peak_memory_mib']:10.1f} MiB ({tr['peak_memory_kind']})")
        print(f"  FLOPs / target token     {tr['mflop_per_target_token']:10.1f} MFLOP (analytic, real tokens, 3 x fwd)")
        print(f"  achieved                 {tr['achieved_gflops']:10.1f} GFLOP/s = "
              f"{100 * tr['fraction_of_gemm_peak']:.1f}% of the {tr['compute']} GEMM peak "
              f"({peaks['fp32' if tr['compute'] == 'fp32' else 'bf16']:.1f})")
        print(f"  FLOP check, one batch    analytic {check['analytic'] / 1e9:.2f} GFLOP vs FlopCounterMode "
              f"{check['counted'] / 1e9:.2f} GFLOP (ratio {check['ratio']:.3f}; padded positions, fwd + bwd)"
              + (f"\n  note: {check['note']}" if check["note"] else ""))
    dec = v.get("decode")
    if dec:
        print(f"decoding {dec['split']} ({dec['sentences']} sentences, batch {dec['batch_size']}, compute "
              f"{dec['compute']}; model: {dec['model']})")
        print(f"  {'':8} {'sent/s':>9} {'tokens/s':>10} {'words/s':>9} {'tok/sent':>9} {'hyp-steps/s':>12} "
              f"{'p50 ms':>8} {'p95 ms':>8}  (latency: batch 1, {dec['greedy']['latency_sentences']} sentences)")
        for name in ("greedy", "beam"):
            d = dec[name]
            label = "greedy" if name == "greedy" else f"beam {d['beam_size']}"
            p50, p95 = (f"{d[k]:8.1f}" if d[k] is not None else f"{'-':>8}" for k in ("latency_p50_ms", "latency_p95_ms"))
            print(f"  {label:8} {d['sentences_per_s']:9.1f} {d['tokens_per_s']:10.1f} {d['words_per_s']:9.1f} "
                  f"{d['mean_output_tokens']:9.1f} {d['hypothesis_steps_per_s']:12.0f} {p50} {p95}")
        print(f"  tokens = {dec['tokens_counted']}; hyp-steps = hypotheses advanced by decoder.step")


def measure_joeynmt(seconds: int, work: Workload, cfg: Config) -> dict[str, Any]:
    """JoeyNMT 2.3.0's training throughput on this machine now (``../shared/peers/joeynmt/speed.sh``), on its
    reference workload (unigram 8k per language), with its target pieces per training sentence so that speeds
    under different tokenizations compare per sentence."""
    import sentencepiece as spm

    print(f"[joeynmt] training JoeyNMT 2.3.0 for {seconds} s ({PEER_SCRIPT}) ...", file=sys.stderr, flush=True)
    done = subprocess.run(["bash", str(PEER_SCRIPT), str(seconds)], capture_output=True, text=True)
    figure = [line for line in done.stdout.splitlines() if line.startswith("joeynmt_target_tokens_per_s")]
    if done.returncode != 0 or not figure:
        raise RuntimeError(f"{PEER_SCRIPT} failed (exit {done.returncode}): {done.stderr[-500:]}")
    tokens_per_s = float(figure[-1].split()[1])
    spm_dir = Path(os.environ.get("PEER_DIR", Path.home() / ".cache" / "seq2seq-peers")) / "spm"
    raw = read_split(cfg.data, cfg.data.train_split)
    src = spm.SentencePieceProcessor(model_file=str(spm_dir / "en.model")).encode(list(raw["src"]))
    tgt = spm.SentencePieceProcessor(model_file=str(spm_dir / "de.model")).encode(list(raw["tgt"]))
    kept = [len(t) + 1 for s, t in zip(src, tgt) if len(s) <= 50 and len(t) <= 50]  # its max_length; + EOS
    pieces = sum(kept) / len(kept)
    return {"seconds": seconds, "target_tokens_per_s": tokens_per_s, "target_pieces_per_sentence": pieces,
            "sentences_per_s": tokens_per_s / pieces, "workload": "unigram 8k per language, GRU 256/256x2/512, "
            "Bahdanau, input feeding, 4,096-token batches (../shared/peers/joeynmt/config.template.yaml)"}


def print_joeynmt(peer: dict[str, Any], variants: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Ours / JoeyNMT's training speed, measured side by side in this run: per target token where both use
    the same tokenization, and per sentence pair always."""
    print(f"\nJoeyNMT 2.3.0 measured in this run ({peer['seconds']} s of training): {peer['target_tokens_per_s']:.0f} "
          f"target tokens/s, {peer['target_pieces_per_sentence']:.2f} target pieces per sentence -> "
          f"{peer['sentences_per_s']:.1f} sentence pairs/s")
    ratios = {}
    for v in variants:
        tr = v.get("train")
        if not tr:
            continue
        same = abs(tr["target_pieces_per_sentence"] - peer["target_pieces_per_sentence"]) < 0.5
        ratios[v["name"]] = {"sentences": tr["sentences_per_s"] / peer["sentences_per_s"]}
        line = f"  {v['name']:12} sentence pairs/s x{ratios[v['name']]['sentences']:.2f}"
        if same:
            ratios[v["name"]]["target_tokens"] = tr["target_tokens_per_s"] / peer["target_tokens_per_s"]
            line += f", target tokens/s x{ratios[v['name']]['target_tokens']:.2f} (same tokenization)"
        print(line)
    return ratios


def compare_ratios(variants: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per variant, figure / baseline figure (the first variant is the baseline)."""
    metrics = {
        "train tokens/s": lambda v: v.get("train", {}).get("target_tokens_per_s"),
        "greedy tokens/s": lambda v: v.get("decode", {}).get("greedy", {}).get("tokens_per_s"),
        "beam tokens/s": lambda v: v.get("decode", {}).get("beam", {}).get("tokens_per_s"),
        "greedy hyp-steps/s": lambda v: v.get("decode", {}).get("greedy", {}).get("hypothesis_steps_per_s"),
        "beam hyp-steps/s": lambda v: v.get("decode", {}).get("beam", {}).get("hypothesis_steps_per_s"),
        "greedy p50 latency": lambda v: v.get("decode", {}).get("greedy", {}).get("latency_p50_ms"),
        "beam p50 latency": lambda v: v.get("decode", {}).get("beam", {}).get("latency_p50_ms"),
    }
    base = variants[0]
    table: dict[str, dict[str, float]] = {}
    for name, get in metrics.items():
        if get(base):
            table[name] = {v["name"]: get(v) / get(base) for v in variants if get(v) is not None}
    print(f"\nratios to '{base['name']}' (> 1 = more; for latency > 1 = slower)")
    print(f"  {'':20}" + "".join(f"{v['name']:>14}" for v in variants))
    for name, row in table.items():
        print(f"  {name:20}" + "".join(f"{row.get(v['name'], float('nan')):14.2f}" for v in variants))
    return table


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python scripts/benchmark.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: configs/multi30k_en_de.yaml, or MODEL/config.yaml "
                        "with --model)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="corpus (default: ../shared/data/multi30k)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                        help="autocast compute dtype for training and decoding (the loss stays fp32)")
    parser.add_argument("--steps", type=int, help=f"timed training steps (default {FULL['steps']})")
    parser.add_argument("--warmup", type=int, help=f"untimed training steps first (default {FULL['warmup']})")
    parser.add_argument("--rounds", type=int, help="turns the timed steps are split into, alternating between the "
                        f"--compare variants (default {FULL['rounds']})")
    parser.add_argument("--model", type=Path, help="decode with this trained model directory (default: the model "
                        "just benchmarked, after its training steps)")
    parser.add_argument("--decode-sentences", type=int, help="test sentences to decode (default: all)")
    parser.add_argument("--latency-sentences", type=int, help=f"batch-1 latency sentences (default "
                        f"{FULL['latency_sentences']})")
    parser.add_argument("--batch-size", type=int, default=64, help="decoding batch size (default 64)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--compare", help="variants run in this process, ratios to the first: fp32,bf16 or "
                        "'name:section.key=value;section.key=value,...' (a variant may set dtype=bf16)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override for every variant (repeatable)")
    parser.add_argument("--json", default="bench.json", help="write all figures here (default bench.json)")
    parser.add_argument("--quick", action="store_true", help=f"tiny run for CI: {QUICK['steps']} steps, "
                        f"{QUICK['decode_sentences']} decode / {QUICK['latency_sentences']} latency sentences, "
                        f"and {' '.join(QUICK_OVERRIDES)}")
    parser.add_argument("--joeynmt", type=int, default=0, metavar="SECONDS",
                        help="also train JoeyNMT 2.3.0 for SECONDS on this machine (../shared/peers/joeynmt/speed.sh) "
                        "and print our training speed over its, side by side (default 0: off)")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="also print torch.profiler's top ROWS ops for one training step and one beam batch")
    return parser


def resolve_sizes(args: argparse.Namespace) -> None:
    """Fill the unset sizes from the quick or full defaults."""
    defaults = QUICK if args.quick else FULL
    for name in ("steps", "warmup", "rounds", "decode_sentences", "latency_sentences"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        raise ConfigError("--steps and --rounds must be >= 1 and --warmup >= 0")


def variant_config(args: argparse.Namespace, variant: Variant) -> Config:
    overrides = [f"data.path={args.data}"]
    given = {o.split("=", 1)[0].strip() for o in args.overrides + variant.overrides}
    if args.quick:
        for text in QUICK_OVERRIDES:
            key = text.split("=", 1)[0]
            if key not in given and not (args.model and key.startswith("tokenizer.")):
                overrides.append(text)
    config = args.config or (args.model / CONFIG_FILE if args.model else REPO_ROOT / "configs" / "multi30k_en_de.yaml")
    dtypes = [f"train.dtype={variant.dtype}", f"decode.dtype={variant.dtype}"]
    return load_config(config, overrides + args.overrides + variant.overrides + dtypes)


def variant_workload(args: argparse.Namespace, cfg: Config, workloads: dict[str, Workload]) -> Workload:
    """The workload for a variant's data and tokenizer settings (shared by variants that agree on them)."""
    key = json.dumps([dataclasses.asdict(cfg.data), dataclasses.asdict(cfg.tokenizer)], sort_keys=True)
    if key not in workloads:
        workloads[key] = load_workload(cfg, args.model)
    return workloads[key]


def run_variants(args: argparse.Namespace, variants: list[Variant], device: torch.device, peaks: dict[str, float],
                 workloads: dict[str, Workload]) -> list[dict[str, Any]]:
    """Training figures (all variants timed in alternating rounds), then each variant's decoding figures."""
    configs = [variant_config(args, variant) for variant in variants]
    works = [variant_workload(args, cfg, workloads) for cfg in configs]
    benches: list[TrainingBench | None] = [None] * len(variants)
    if not args.skip_train:
        for index, (variant, cfg, work) in enumerate(zip(variants, configs, works)):
            print(f"[{variant.name}] building and warming up ...", file=sys.stderr, flush=True)
            benches[index] = TrainingBench(cfg, work, device, args.warmup)
        print(f"timing {args.steps} training steps per variant in {args.rounds} alternating round(s) ...",
              file=sys.stderr, flush=True)
        bench_training([b for b in benches if b is not None], args.steps, args.rounds)
    results = []
    for variant, cfg, work, bench in zip(variants, configs, works, benches):
        result: dict[str, Any] = {"name": variant.name, "dtype": variant.dtype, "overrides": variant.overrides,
                                  "vocab": [work.src_tok.vocab_size, work.tgt_tok.vocab_size], "config": cfg.to_dict()}
        trained = bench.model if bench is not None else None
        if bench is not None:
            result["train"] = bench.figures(peaks)
            result["parameters"] = trained.num_parameters()
        if not args.skip_decode:
            print(f"[{variant.name}] decoding ...", file=sys.stderr, flush=True)
            translator = decoding_translator(cfg, work, device, args.model, trained)
            sources = work.test_sources[: args.decode_sentences or None]
            result["decode"] = bench_decoding(translator, sources, args.batch_size, args.latency_sentences)
            result["decode"]["split"] = work.test_split
            result["decode"]["trained_model"] = args.model is not None
            result["decode"]["model"] = (str(args.model) if args.model else
                                         f"the benchmarked one after {args.warmup + args.steps} training steps"
                                         if trained is not None else "untrained (fresh initialisation)")
        if args.profile:
            model = trained or decoding_translator(cfg, work, device, args.model, None).model
            profile(cfg, work, model, device, work.test_sources, args.profile)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    datasets.disable_progress_bars()
    try:
        resolve_sizes(args)
        variants = parse_variants(args.compare, args.dtype)
        device = resolve_device(args.device)
        base_cfg = variant_config(args, variants[0])
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if device.type == "cpu":
        torch.set_num_threads(base_cfg.train.threads or os.cpu_count() or 1)
    size, reps = (1024, 3) if args.quick else ((4096, 10) if device.type == "cuda" else (2048, 5))
    peaks = {name: gemm_peak(device, dtype, size, reps) for name, dtype in PEAK_DTYPES.items()}
    report: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "quick": args.quick,
        "gemm": {"size": size, "peak_gflops": peaks},
    }
    print(f"seq2seq benchmark: torch {report['torch']}, {device} ({report['device_name']}), "
          f"{report['threads']} threads, {report['timestamp']}")
    print(f"GEMM peak ({size}x{size} matmul, best of {reps}): fp32 {peaks['fp32']:.1f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.1f} GFLOP/s")
    workloads: dict[str, Workload] = {}
    try:
        report["variants"] = run_variants(args, variants, device, peaks, workloads)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for variant in report["variants"]:
        print_variant(variant, peaks)
    if args.joeynmt:
        try:
            peer = measure_joeynmt(args.joeynmt, next(iter(workloads.values())), base_cfg)
        except (RuntimeError, OSError) as err:
            print(f"error: JoeyNMT could not be measured: {err}", file=sys.stderr)
            return 2
        report["joeynmt"] = dict(peer, ratios=print_joeynmt(peer, report["variants"]))
    if len(variants) > 1:
        report["ratios"] = compare_ratios(report["variants"])
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
