"""The training state in last/ (seq2seq/training/saved_state.py): a failed or interrupted write keeps a state
that --resume can load. Killing real training processes at each write: test_kill.py."""

from __future__ import annotations

import os

import pytest
import safetensors.torch
from support.faults import ENOSPC, model_copy, snapshot

from seq2seq.checkpoint import CheckpointError, find_training_state, load_model_dir
from seq2seq.training.optimizer import build_optimizer
from seq2seq.training.saved_state import load_training_state, save_training_state


def test_disk_full_while_saving_training_state_keeps_the_previous_one(tiny_model_dir, tmp_path, monkeypatch):
    run_dir = model_copy(tiny_model_dir, tmp_path / "run")
    cfg, model, _, _ = load_model_dir(run_dir)
    optimizer = build_optimizer(cfg.train, model.parameters())
    state = load_training_state(run_dir / "last", model, optimizer)
    before = snapshot(run_dir)
    calls = {"n": 0}
    real_save = safetensors.torch.save_file

    def second_write_fails(*args, **kwargs):  # the weights get written, the optimizer state does not
        calls["n"] += 1
        if calls["n"] == 2:
            raise ENOSPC
        return real_save(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", second_write_fails)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_training_state(run_dir, model, optimizer, {**state, "step": state["step"] + 1})
    monkeypatch.undo()
    assert snapshot(run_dir) == before  # last/ untouched, last.tmp/ removed
    assert find_training_state(run_dir) == run_dir / "last"
    load_training_state(run_dir / "last", model, optimizer)


def test_failure_between_the_renames_of_last_keeps_a_loadable_state(tiny_model_dir, tmp_path, monkeypatch):
    """last/ is swapped in by two renames (last -> last.old, last.tmp -> last): failing, or being killed, between
    them leaves last.old/, which resume finds."""
    run_dir = model_copy(tiny_model_dir, tmp_path / "run")
    cfg, model, _, _ = load_model_dir(run_dir)
    optimizer = build_optimizer(cfg.train, model.parameters())
    state = load_training_state(run_dir / "last", model, optimizer)
    real_replace, calls = os.replace, []

    def second_rename_fails(src, dst):
        calls.append((str(src), str(dst)))
        if str(src).endswith("last.tmp"):
            raise ENOSPC
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_rename_fails)
    with pytest.raises(CheckpointError, match="previous state is kept"):
        save_training_state(run_dir, model, optimizer, {**state, "step": state["step"] + 1})
    monkeypatch.undo()
    assert not (run_dir / "last").exists()
    found = find_training_state(run_dir)
    assert found == run_dir / "last.old"
    assert load_training_state(found, model, optimizer)["step"] == state["step"]
