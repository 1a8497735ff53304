"""Shared fixtures. Tests that need Multi30k skip with a reason when ../shared/data is absent (and fail instead
under ``CI=true``)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch
from support.corpus import DE, EN

from seq2seq.config import TokenizerConfig
from seq2seq.tokenizer import Tokenizer, train_tokenizers

REPO_ROOT = Path(__file__).resolve().parents[1]
#: the environment of command-line subprocesses: one torch thread (the CI machine's two cores are shared, and two
#: threads then run far slower), and no GPU: the tests compare CPU results (tests that need a GPU are marked cuda);
#: PYTHONPATH: the package of this checkout, whatever the directory a command runs in (not another checkout
#: installed in the environment)
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
                  "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
MULTI30K = Path(os.environ.get("SEQ2SEQ_MULTI30K", REPO_ROOT.parent / "shared" / "data" / "multi30k"))


def require_multi30k() -> Path:
    """The Multi30k directory; without it a test skips, saying so, except under CI (``CI=true``), where it fails:
    CI must not pass with nearly every integration test skipped."""
    if not (MULTI30K / "train.en.gz").is_file():
        reason = f"Multi30k not found at {MULTI30K} (set SEQ2SEQ_MULTI30K or put ../shared/data beside the repo)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true needs the corpus", pytrace=False)
        pytest.skip(reason)
    return MULTI30K


@pytest.fixture
def multi30k_dir() -> Path:
    """The Multi30k directory (``{split}.{lang}.gz``); see :func:`require_multi30k`."""
    return require_multi30k()


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny test models run fastest on one thread (no pool spinning when several processes share cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    torch.manual_seed(0)


def write_subset(src_dir: Path, out_dir: Path, split: str, langs: tuple[str, str], lines: int) -> None:
    """Copy the first ``lines`` pairs of a Multi30k split into ``out_dir/{split}.{lang}`` (plain text)."""
    import gzip

    out_dir.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        with gzip.open(src_dir / f"{split}.{lang}.gz", "rt", encoding="utf-8") as handle:
            head = [next(handle) for _ in range(lines)]
        (out_dir / f"{split}.{lang}").write_text("".join(head), encoding="utf-8")


TINY_OVERRIDES = [
    "tokenizer.vocab_size=400",
    "model.emb_size=32", "model.encoder_hidden_size=32", "model.decoder_hidden_size=48", "model.dropout=0.0",
    "train.max_tokens=1200", "train.valid_every=25", "train.log_every=5", "train.max_steps=50",
    "train.lr=0.003", "train.threads=1", "train.device=cpu", "train.dtype=fp32", "decode.dtype=fp32",
    "decode.beam_size=3", "decode.max_len_a=1.2", "decode.max_len_b=5",
    # the tiny model keeps input feeding (the recipe's default until 2026-12-02): the tests of the app, the page and
    # minimum lengths rely on what its 50 steps learn (non-empty beam outputs); the one-call decoder without input
    # feeding has tests of its own (tests/test_decoder.py)
    "model.input_feeding=true",
    # the machinery under test, not the recipe's budget schedule (a time budget makes the learning rate follow the
    # clock; tests of the budget schedules and the weight average set them themselves)
    "train.max_minutes=0", "train.scheduler=plateau", "train.warmup_steps=0", "train.ema_decay=0",
]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A small en-de corpus (2,000 train, 100 val, 100 test pairs from Multi30k) in a split directory."""
    require_multi30k()
    out = tmp_path_factory.mktemp("tiny_corpus")
    write_subset(MULTI30K, out, "train", ("en", "de"), 2000)
    write_subset(MULTI30K, out, "val", ("en", "de"), 100)
    write_subset(MULTI30K, out, "test_2016_flickr", ("en", "de"), 100)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_corpus, tmp_path_factory) -> Path:
    """A real model trained for 50 steps on ``tiny_corpus`` (a complete model directory). Read-only: copy it
    before changing anything inside."""
    from seq2seq.config import load_config
    from seq2seq.train import train

    out = tmp_path_factory.mktemp("tiny_model")
    cfg = load_config(REPO_ROOT / "configs" / "multi30k_en_de.yaml", [
        f"data.path={tiny_corpus}", f"data.cache_dir={tmp_path_factory.mktemp('cache')}",
        "data.test_splits=[test_2016_flickr]", *TINY_OVERRIDES,
    ])
    train(cfg, out)
    return out


@pytest.fixture(scope="session")
def onnx_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A copy of ``tiny_model_dir`` with its graphs exported (``python -m seq2seq.onnx_export``). Read-only."""
    import shutil

    from seq2seq.onnx_export import main

    model_dir = tmp_path_factory.mktemp("onnx_model") / "model"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("last"))
    assert main(["--model", str(model_dir)]) == 0
    return model_dir


def train_until_interrupted(cfg, out: Path, steps_done: int, monkeypatch) -> dict:
    """Train into ``out`` with a real Ctrl-C (SIGINT sent to this process) arriving inside step ``steps_done``,
    right after its optimizer update and before the step's counters are advanced (the moment where a state saved
    on the spot would hold new weights with old counters); returns the interrupted run's summary."""
    import signal

    from seq2seq.train import train

    real_step, calls = torch.amp.GradScaler.step, {"n": 0}

    def interrupting_step(self, optimizer, *args, **kwargs):
        result = real_step(self, optimizer, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == steps_done:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, mid-step
        return result

    monkeypatch.setattr(torch.amp.GradScaler, "step", interrupting_step)
    try:
        summary = train(cfg, out)
    finally:
        monkeypatch.setattr(torch.amp.GradScaler, "step", real_step)
    assert summary["interrupted"] is True, "the run was not interrupted"
    return summary


@pytest.fixture(scope="module")
def small_tokenizers(tmp_path_factory) -> tuple[Tokenizer, Tokenizer]:
    """Source and target tokenizers (vocabulary 40) trained on 300 short lines drawn from ``support.corpus``."""
    rng = random.Random(0)
    en_lines = [" ".join(rng.choice(EN).split()[: rng.randint(1, 6)]) for _ in range(300)]
    de_lines = [" ".join(rng.choice(DE).split()[: rng.randint(1, 6)]) for _ in range(300)]
    return train_tokenizers(TokenizerConfig(vocab_size=40), en_lines, de_lines, tmp_path_factory.mktemp("tok"))
