"""seq2seq/bench (what scripts/benchmark.py runs): the analytic FLOP count against FlopCounterMode, variant
parsing, and a quick run of scripts/benchmark.py on Multi30k that writes a complete JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seq2seq.batches import collate
from seq2seq.bench.flops import counted_training_flops, training_flops
from seq2seq.bench.report import compare_ratios
from seq2seq.bench.training import bench_training
from seq2seq.bench.variants import parse_variants
from seq2seq.config import ConfigError, ModelConfig
from seq2seq.model import build_model

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "benchmark.py"


MODELS = {
    "gru-bi-bahdanau-feed": {},
    "lstm-uni-luong_general-textbook": dict(rnn_type="lstm", bidirectional=False, attention="luong_general",
                                            rnn_impl="reference"),
    "gru-2layers-luong_dot-parallel": dict(encoder_layers=2, decoder_layers=2, attention="luong_dot",
                                           input_feeding=False, encoder_hidden_size=12),
    "gru-tied-zero-bridge": dict(tie_embeddings=True, bridge="zero", decoder_layers=2),
}


@pytest.mark.parametrize("overrides", MODELS.values(), ids=MODELS.keys())
def test_training_flops_matches_flop_counter(overrides):
    cfg = ModelConfig(**{"emb_size": 16, "encoder_hidden_size": 16, "decoder_hidden_size": 24, "dropout": 0.0,
                         **overrides})
    src_vocab, tgt_vocab = 50, 70
    model = build_model(cfg, src_vocab, tgt_vocab)
    generator = torch.Generator().manual_seed(0)
    src_lengths, tgt_pieces = [9, 6, 3, 7], [8, 4, 5, 2]
    src = [torch.randint(4, src_vocab, (n - 1,), generator=generator).tolist() + [3] for n in src_lengths]
    tgt = [torch.randint(4, tgt_vocab, (n,), generator=generator).tolist() for n in tgt_pieces]
    batch = collate(src, tgt)
    counted, _ = counted_training_flops(model, batch)
    b, s, t = batch.size, batch.src.size(1), batch.tgt_in.size(1)
    src_positions = sum(src_lengths) if cfg.rnn_impl == "fused" else b * s  # packed vs stepped over padding
    analytic = training_flops(cfg, src_vocab, tgt_vocab, src_positions, b * t, b * s * t, b, key_positions=b * s)
    assert analytic == pytest.approx(counted, rel=0.15)


def test_training_flops_reference_workload_is_about_47_mflop_per_target_token():
    from seq2seq.config import load_config

    cfg = load_config(REPO_ROOT / "configs" / "multi30k_en_de.yaml").model
    flops = training_flops(cfg, 8000, 8000, src_tokens=14, tgt_tokens=15)  # one typical sentence
    assert 40e6 < flops / 15 < 55e6


def test_parse_variants():
    assert [(v.name, v.dtype, v.overrides) for v in parse_variants(None, "bf16")] == [("baseline", "bf16", [])]
    assert [(v.name, v.dtype) for v in parse_variants("fp32,bf16", "fp32")] == [("fp32", "fp32"), ("bf16", "bf16")]
    variants = parse_variants("ref:model.rnn_impl=fused,text:model.rnn_impl=reference;dtype=bf16;"
                              "data.test_splits=[a,b]", "fp32")
    assert [(v.name, v.dtype, v.overrides) for v in variants] == [
        ("ref", "fp32", ["model.rnn_impl=fused"]),
        ("text", "bf16", ["model.rnn_impl=reference", "data.test_splits=[a,b]"]),
    ]
    with pytest.raises(ConfigError, match="names must differ"):
        parse_variants("fp32,fp32", "fp32")
    with pytest.raises(ConfigError, match="dtype"):
        parse_variants("x:dtype=fp8", "fp32")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One data cache for the runs below: the second reuses the tokenizers and the tokenized corpus."""
    return tmp_path_factory.mktemp("bench_cache")


def test_quick_benchmark_writes_a_complete_report(multi30k_dir, cache_dir, tmp_path):
    out = tmp_path / "bench.json"
    # One thread: the quick run stays fast even when other jobs share the two cores (two OpenMP threads on a busy
    # machine are many times slower).
    command = [sys.executable, str(SCRIPT), "--quick", "--data", str(multi30k_dir), "--json", str(out),
               "--set", f"data.cache_dir={cache_dir}", "--set", "train.threads=1"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    for key in ("timestamp", "torch", "device", "threads", "dtype", "gemm", "variants"):
        assert key in report
    assert report["gemm"]["peak_gflops"]["fp32"] > 0 and report["gemm"]["peak_gflops"]["bf16"] > 0
    (variant,) = report["variants"]
    assert variant["config"]["model"]["rnn_type"] == "gru"
    train = variant["train"]
    for key in ("target_tokens_per_s", "src_tgt_tokens_per_s", "peak_memory_mib", "mflop_per_target_token",
                "achieved_gflops", "fraction_of_gemm_peak"):
        assert train[key] > 0, key
    check = train["flop_check"]
    assert check["analytic"] == pytest.approx(check["counted"], rel=0.15)
    decode = variant["decode"]
    assert decode["sentences"] == 64 and decode["split"] == "test_2016_flickr"
    for name in ("greedy", "beam"):
        for key in ("sentences_per_s", "tokens_per_s", "latency_p50_ms", "latency_p95_ms"):
            assert decode[name][key] > 0, (name, key)
        assert decode[name]["latency_sentences"] == 10
    assert decode["beam"]["beam_size"] == 5


def test_compare_reports_ratios_to_the_first_variant(multi30k_dir, cache_dir, tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--data", str(multi30k_dir), "--json", str(out),
               "--set", f"data.cache_dir={cache_dir}", "--set", "train.threads=1", "--skip-decode",
               "--steps", "1", "--warmup", "0", "--compare",
               "small:model.decoder_hidden_size=64,tiny:model.decoder_hidden_size=32;dtype=bf16,picked:dtype=auto"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [v["name"] for v in report["variants"]] == ["small", "tiny", "picked"]
    assert report["variants"][1]["dtype"] == "bf16" and report["variants"][1]["train"]["compute"] == "bf16"
    assert report["variants"][2]["train"]["compute"] in ("fp32", "bf16")  # auto: whichever measured faster
    speeds = [v["train"]["target_tokens_per_s"] for v in report["variants"]]
    assert report["ratios"]["train tokens/s"] == pytest.approx(
        {"small": 1.0, "tiny": speeds[1] / speeds[0], "picked": speeds[2] / speeds[0]})
    assert "joeynmt" not in report


def test_compare_ratios_by_hand():
    """Figures over the first variant's, per metric; a metric the baseline lacks is left out."""
    variants = [
        {"name": "a", "train": {"target_tokens_per_s": 200.0}, "decode": {"beam": {"latency_p50_ms": 40.0}}},
        {"name": "b", "train": {"target_tokens_per_s": 300.0}, "decode": {"beam": {"latency_p50_ms": 10.0}}},
        {"name": "c", "train": {"target_tokens_per_s": 50.0}},
    ]
    ratios = compare_ratios(variants)
    assert ratios == {"train tokens/s": {"a": 1.0, "b": 1.5, "c": 0.25}, "beam p50 latency": {"a": 1.0, "b": 0.25}}


def test_training_rounds_alternate_between_variants_and_time_every_step():
    """7 steps in 3 rounds: each variant runs 2, 2, 3 steps, taking turns A B A B A B."""
    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def run(self, steps):
            calls.append((self.name, steps))

    bench_training([Recorder("A"), Recorder("B")], steps=7, rounds=3)
    assert calls == [("A", 2), ("B", 2), ("A", 2), ("B", 2), ("A", 3), ("B", 3)]
    calls.clear()
    bench_training([Recorder("A")], steps=2, rounds=5)  # never more rounds than steps, never a 0-step turn
    assert calls == [("A", 1), ("A", 1)]
