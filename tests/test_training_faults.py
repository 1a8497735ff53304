"""Training under faults, in process: non-finite losses are skipped with a warning, too many in a row abort keeping
the last good state, and a full disk during training is one clear error keeping the last checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import safetensors
import safetensors.torch
from conftest import TINY_OVERRIDES
from support.runs import RECIPE

from seq2seq.translator import Translator
from seq2seq.checkpoint import find_training_state, load_model_dir
from seq2seq.config import load_config
from seq2seq.model import Seq2Seq
from seq2seq.training.optimizer import build_optimizer
from seq2seq.train import main as train_main
from seq2seq.train import train
from seq2seq.training.saved_state import load_training_state


# ============================================================================ training faults, in-process
@pytest.fixture
def small_run(tiny_corpus, tiny_model_dir, tmp_path):
    """A config for a short in-process run on the tiny corpus, and an output dir that already holds the tiny
    model's tokenizers (so that training does not train them again)."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("tokenizer.src.model", "tokenizer.tgt.model"):
        shutil.copy(tiny_model_dir / name, out / name)
    overrides = [f"data.path={tiny_corpus}", f"data.cache_dir={tmp_path / 'cache'}", "data.test_splits=[]",
                 *TINY_OVERRIDES, "train.threads=1", "train.max_steps=8", "train.valid_every=3",
                 "train.valid_bleu_sentences=10", "train.max_bad_steps=3", "decode.max_src_length=20"]
    return overrides, out


def poison_training_loss(monkeypatch, bad_calls) -> None:
    """Make the training loss NaN on the given training-mode calls (1-based); validation is left alone."""
    original, calls = Seq2Seq.forward, {"n": 0}

    def forward(self, *args, **kwargs):  # the training step calls forward with the targets: (logits, loss)
        logits, loss = original(self, *args, **kwargs)
        if self.training and loss is not None:
            calls["n"] += 1
            if calls["n"] in bad_calls:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(Seq2Seq, "forward", forward)


def test_non_finite_losses_are_skipped_with_a_warning(small_run, monkeypatch):
    overrides, out = small_run
    poison_training_loss(monkeypatch, {2, 3})  # two in a row, below train.max_bad_steps = 3
    summary = train(load_config(RECIPE, overrides), out)
    assert summary["step"] == 8  # skipped batches are not steps
    log = (out / "train.log").read_text(encoding="utf-8")
    assert log.count("non-finite loss") == 2 and "batch skipped" in log
    Translator.load(out, device="cpu")  # the weights saved are finite (the loader checks)


def test_non_finite_losses_in_a_row_abort_keeping_the_last_good_state(small_run, monkeypatch, capsys):
    overrides, out = small_run
    poison_training_loss(monkeypatch, set(range(5, 10_000)))  # steps 1-4 fine (validation at step 3), then NaN
    argv = ["--config", str(RECIPE), "--out", str(out), *[a for o in overrides for a in ("--set", o)]]
    assert train_main(argv) == 2
    error = capsys.readouterr().err
    assert "3 non-finite losses in a row" in error and "train.max_bad_steps = 3" in error, error
    assert str(out / "last") in error and "Traceback" not in error
    assert json.loads((out / "last" / "state.json").read_text())["step"] == 3
    Translator.load(out, device="cpu")
    cfg, model, _, _ = load_model_dir(out)
    load_training_state(out / "last", model, build_optimizer(cfg.train, model.parameters()))


def test_disk_full_during_training_is_a_clear_error_keeping_the_last_checkpoint(small_run, monkeypatch, capsys):
    overrides, out = small_run
    real_save = safetensors.torch.save_file

    def fails_after_the_first_validation(*args, **kwargs):  # once last/ holds step 3 (validation), the disk is full
        saved = out / "last" / "state.json"
        if saved.is_file() and json.loads(saved.read_text())["step"] >= 3:
            raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", fails_after_the_first_validation)
    argv = ["--config", str(RECIPE), "--out", str(out), *[a for o in overrides for a in ("--set", o)]]
    assert train_main(argv) == 2
    error = capsys.readouterr().err
    assert "No space left on device" in error and "unchanged" in error and "Traceback" not in error, error
    monkeypatch.undo()
    assert find_training_state(out) == out / "last"
    assert json.loads((out / "last" / "state.json").read_text())["step"] == 3
    Translator.load(out, device="cpu")
    assert not list(out.rglob("*.tmp")) and not (out / "last.tmp").exists()
