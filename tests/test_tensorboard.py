"""train.tensorboard: the event files hold the scalars of train_log.jsonl, read back with TensorBoard's own reader."""

from __future__ import annotations

import sys

import pytest

from support.runs import tiny_config, train_records

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")


def read_events(log_dir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from every event file in ``log_dir``, by tensorboard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_event_files_hold_the_train_log_scalars(tiny_corpus, tmp_path):
    from seq2seq.train import train

    out = tmp_path / "run"
    train(tiny_config(tiny_corpus, tmp_path / "cache", "train.max_steps=8", "train.log_every=2", "train.valid_every=4",
                      "train.valid_bleu_sentences=20", "train.ema_decay=0.9", "train.tensorboard=true"), out)
    records = train_records(out)
    train_logged = [r for r in records if r["type"] == "train"]
    valid_records = [r for r in records if r["type"] == "valid"]
    assert len(train_logged) == 4 and len(valid_records) == 2

    scalars = read_events(out / "tensorboard")
    expected = {  # tag -> (record type, key): the names users of JoeyNMT / fairseq look for, written out here
        "train/loss": ("train", "loss"), "train/ppl": ("train", "ppl"), "train/lr": ("train", "lr"),
        "train/tokens_per_s": ("train", "tokens_per_s"), "valid/loss": ("valid", "val_loss"),
        "valid/ppl": ("valid", "val_ppl"), "valid/bleu": ("valid", "val_bleu"), "valid/chrf": ("valid", "val_chrf"),
        "valid/raw_bleu": ("valid", "raw_bleu"), "valid/average_bleu": ("valid", "average_bleu"),
    }
    for tag, (kind, key) in expected.items():
        logged = [(r["step"], r[key]) for r in records if r["type"] == kind]
        assert [step for step, _ in scalars[tag]] == [step for step, _ in logged], tag
        assert [value for _, value in scalars[tag]] == pytest.approx([value for _, value in logged], rel=1e-6), tag
    chosen = [(r["step"], 1.0 if r["weights"] == "average" else 0.0) for r in valid_records]
    assert scalars["valid/average_weights"] == chosen


def test_without_tensorboard_no_event_files(tmp_path):
    from seq2seq.training.tensorboard import TensorBoardLog

    with TensorBoardLog(tmp_path, enabled=False) as board:
        assert board is None
    assert not (tmp_path / "tensorboard").exists()


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    from seq2seq.training import TrainingError
    from seq2seq.training.tensorboard import TensorBoardLog

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    with pytest.raises(TrainingError, match=r"seq2seq\[tensorboard\].*--tensorboard"):
        TensorBoardLog(tmp_path, enabled=True)


def test_flag_sets_the_config_key():
    from seq2seq.training.arguments import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args(["--tensorboard"])).train.tensorboard is True
    assert config_from_args(build_parser().parse_args([])).train.tensorboard is False
