"""What ``--resume`` keeps from the run it continues (:mod:`seq2seq.training.resume`): the compute dtypes the run
resolved (``dtype: auto`` is not decided again), refusing a dtype it cannot keep. The settings it may not change
are tested in test_state_faults.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seq2seq import precision
from seq2seq.train import main as train_main


@pytest.fixture
def run_dir(tiny_model_dir, tmp_path) -> Path:
    """A copy of the tiny model's run directory (trained 50 steps with train.dtype = decode.dtype = fp32)."""
    out = tmp_path / "run"
    shutil.copytree(tiny_model_dir, out, ignore=shutil.ignore_patterns("*.log", "*.jsonl", "*.png"))
    return out


def saved_state(run_dir: Path) -> dict:
    return json.loads((run_dir / "last" / "state.json").read_text(encoding="utf-8"))


def save_dtypes(run_dir: Path, dtypes: dict) -> None:
    state = saved_state(run_dir)
    state["dtypes"] = dtypes
    (run_dir / "last" / "state.json").write_text(json.dumps(state), encoding="utf-8")


def resume(run_dir: Path, *overrides: str) -> int:
    sets = ["train.valid_bleu_sentences=5", "data.test_splits=[]", *overrides]
    return train_main(["--out", str(run_dir), "--resume", *[a for o in sets for a in ("--set", o)]])


def test_the_training_state_holds_the_resolved_dtypes(run_dir):
    assert saved_state(run_dir)["dtypes"] == {"train": "fp32", "decode": "fp32"}


def test_resume_keeps_the_saved_dtypes_under_auto_without_measuring(run_dir, monkeypatch, capsys):
    """The run computed in bf16 (as saved); resumed under ``auto`` on a host whose measurement would say
    otherwise (here: any measurement fails the test), it goes on in bf16 and saves bf16 again."""
    save_dtypes(run_dir, {"train": "bf16", "decode": "fp32"})

    def no_measurement(*args, **kwargs):
        raise AssertionError("a resume measured dtype: auto again")

    monkeypatch.setattr(precision, "measure", no_measurement)
    assert resume(run_dir, "train.dtype=auto", "decode.dtype=auto", "train.max_steps=52") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 52
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert "training compute torch.bfloat16, validation decoding torch.float32" in log
    assert saved_state(run_dir)["dtypes"] == {"train": "bf16", "decode": "fp32"}


@pytest.mark.parametrize("saved, override, message", [
    ({"train": "fp32", "decode": "fp32"}, "train.dtype=bf16", "--resume cannot change train.dtype"),
    ({"train": "fp32", "decode": "bf16"}, "decode.dtype=fp32", "--resume cannot change decode.dtype"),
    ({"train": "fp16", "decode": "fp32"}, "train.dtype=auto", "cannot continue the run"),  # fp16 on the CPU
    ({"train": "fp8", "decode": "fp32"}, "train.dtype=auto", "'dtypes'"),
])
def test_a_dtype_the_resume_cannot_keep_is_refused_naming_why(run_dir, capsys, saved, override, message):
    save_dtypes(run_dir, saved)
    assert resume(run_dir, override) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err.strip().splitlines()[-1], err
