"""On a CUDA GPU: training under bf16 and fp16 autocast (fp16 with the gradient scaler), resume, CUDA decoding
against CPU decoding, and ``dtype: auto`` choosing among the CUDA candidates. Skipped where there is no GPU.

    python -m pytest -q -m cuda          # on a GPU machine
"""

from __future__ import annotations

import gzip
import json
import math
import shutil

import pytest
import safetensors.torch
import torch
from conftest import MULTI30K, REPO_ROOT, TINY_OVERRIDES, train_until_interrupted

from seq2seq.translator import Translator
from seq2seq.config import load_config
from seq2seq.train import train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here: run `python -m pytest -m cuda` on one"),
]
RECIPE = REPO_ROOT / "configs" / "multi30k_en_de.yaml"
CUDA_OVERRIDES = ["train.device=cuda", "train.max_steps=12", "train.valid_every=6", "train.log_every=1",
                  "train.valid_bleu_sentences=20", "model.dropout=0.1", "data.test_splits=[]"]


def cuda_config(corpus, cache, *overrides):
    return load_config(RECIPE, [f"data.path={corpus}", f"data.cache_dir={cache}", *TINY_OVERRIDES, *CUDA_OVERRIDES,
                                *overrides])


def records(run_dir, kind):
    lines = (run_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_training_under_autocast_on_cuda(dtype, tiny_corpus, tmp_path):
    cfg = cuda_config(tiny_corpus, tmp_path / "cache", f"train.dtype={dtype}", f"decode.dtype={dtype}")
    summary = train(cfg, tmp_path / "run")
    assert summary["step"] == 12
    losses = [r["loss"] for r in records(tmp_path / "run", "train")]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    log = (tmp_path / "run" / "train.log").read_text(encoding="utf-8")
    assert f"device cuda, training compute {'torch.bfloat16' if dtype == 'bf16' else 'torch.float16'}" in log
    weights = safetensors.torch.load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(t.dtype == torch.float32 and bool(torch.isfinite(t).all()) for t in weights.values())


def test_resume_on_cuda_matches_the_uninterrupted_run(tiny_corpus, tmp_path, monkeypatch):
    """fp32 on CUDA: the resumed run's logged losses (4 decimals) agree with the uninterrupted run's within 1e-4
    and its weights within 1e-5 (CUDA kernels such as the embedding backward add in a nondeterministic order, so
    bit equality is not promised here)."""
    cfg = cuda_config(tiny_corpus, tmp_path / "cache", "train.dtype=fp32", "decode.dtype=fp32")
    train(cfg, tmp_path / "full")
    out = tmp_path / "resumed"
    out.mkdir()
    for name in ("tokenizer.src.model", "tokenizer.tgt.model"):
        shutil.copy(tmp_path / "full" / name, out / name)
    train_until_interrupted(cfg, out, 8, monkeypatch)
    assert train(cfg, out, resume=True)["step"] == 12
    full = {r["step"]: r["loss"] for r in records(tmp_path / "full", "train")}
    resumed = {r["step"]: r["loss"] for r in records(out, "train")}
    assert sorted(resumed) == list(range(1, 13))
    for step in range(9, 13):
        assert resumed[step] == pytest.approx(full[step], abs=1e-4), step
    a = safetensors.torch.load_file(str(tmp_path / "full" / "last" / "model.safetensors"))
    b = safetensors.torch.load_file(str(out / "last" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


def test_cuda_decoding_matches_cpu_decoding(tiny_model_dir):
    """fp32 on both devices: at least 97 of 100 greedy and beam outputs are identical, and where they are, the
    scores agree within 1e-3 (reductions run in another order on the GPU, so a near tie may flip)."""
    cpu = Translator.load(tiny_model_dir, device="cpu", dtype="fp32")
    gpu = Translator.load(tiny_model_dir, device="cuda", dtype="fp32")
    with gzip.open(MULTI30K / "val.en.gz", "rt", encoding="utf-8") as handle:
        sources = [next(handle).strip() for _ in range(100)]
    for beam_size in (1, 3):
        on_cpu = [entry[0] for entry in cpu.generate(sources, beam_size=beam_size)]
        on_gpu = [entry[0] for entry in gpu.generate(sources, beam_size=beam_size)]
        same = [(a, b) for a, b in zip(on_cpu, on_gpu) if a.tokens == b.tokens]
        assert len(same) >= 97, f"beam {beam_size}: only {len(same)} of 100 identical"
        assert max(abs(a.score - b.score) for a, b in same) < 1e-3


def test_auto_dtype_on_cuda_times_the_cuda_candidates(tmp_path):
    """``auto`` on CUDA times tf32, bf16 and fp16 for each workload, caches the times, and chooses by the rule
    written out here (not dtype_auto.decide's code): the most exact of tf32, bf16, fp16 whose time is within 3 % of
    the fastest; a second call returns the cached choice."""
    from seq2seq import dtype_auto
    from seq2seq.config import ModelConfig
    from seq2seq.decoding.search import decoding_work
    from seq2seq.model import build_model
    from seq2seq.training.step import training_work

    device = torch.device("cuda")
    model = build_model(ModelConfig(emb_size=64, encoder_hidden_size=64, decoder_hidden_size=128), 500, 500).to(device)
    chosen = {}
    work = {"train": training_work(2048), "decode": decoding_work(32, 4)}
    for purpose in work:
        chosen[purpose] = dtype_auto.auto_dtype(device, model, work[purpose], tmp_path)
    cache = json.loads((tmp_path / dtype_auto.CACHE_FILE).read_text(encoding="utf-8"))
    assert len(cache) == 2
    for purpose in chosen:
        [entry] = [entry for key, entry in cache.items() if f"| {purpose} " in key]
        # timed on the whole work; those the probe dropped only on the probe's rows (all, if one was left)
        seconds = entry["seconds"] or entry["probe_seconds"]
        assert set(entry["seconds"]) | set(entry["probe_seconds"]) == {"tf32", "bf16", "fp16"}
        assert all(math.isfinite(t) and t > 0 for t in seconds.values()), seconds
        fastest = min(seconds.values())
        expected = next(name for name in ("tf32", "bf16", "fp16") if seconds[name] <= fastest * 1.03)
        assert entry["choice"] == chosen[purpose] == expected, (purpose, seconds)
    for purpose in chosen:  # from the cache now: the same answer without timing again
        assert dtype_auto.auto_dtype(device, model, work[purpose], tmp_path) == chosen[purpose]
