"""What ``--resume`` keeps and refuses: the compute dtypes the run resolved; a tampered ``last/state.json``,
settings that ``--resume`` may not change, tokenizer models left in ``--out`` by other settings, a model
directory stopped before its first save. Each is one clear error through ``python -m seq2seq.train`` (exit 2,
an ``error: ...`` line naming the file or key, no traceback).

They run ``seq2seq.train.main`` in this process (the errors come before any training step).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, TINY_OVERRIDES

from seq2seq import dtype_auto
from seq2seq.translator import Translator
from seq2seq.checkpoint import CheckpointError
from seq2seq.config import ConfigError, load_config
from seq2seq.train import main as train_main

RECIPE = REPO_ROOT / "configs" / "multi30k_en_de.yaml"


@pytest.fixture
def run_dir(tiny_model_dir, tmp_path) -> Path:
    """A copy of the tiny model's run directory (its last/ holds the state after 50 steps)."""
    out = tmp_path / "run"
    shutil.copytree(tiny_model_dir, out, ignore=shutil.ignore_patterns("*.log", "*.jsonl", "*.png"))
    return out


def edit_state(run_dir: Path, change) -> None:
    path = run_dir / "last" / "state.json"
    state = json.loads(path.read_text(encoding="utf-8"))
    change(state)
    path.write_text(json.dumps(state), encoding="utf-8")


def resume_error(run_dir: Path, capsys, *overrides: str) -> str:
    argv = ["--out", str(run_dir), "--resume", *[a for o in overrides for a in ("--set", o)]]
    assert train_main(argv) == 2
    err = capsys.readouterr().err  # the log lines of the run, then the error
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err
    return last


# ---------------------------------------------------------------------------- tampered last/state.json
def _delete(key):
    return lambda state: state.pop(key)


def _set(path: tuple, value):
    def change(state):
        target = state
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


STATE_FAULTS = {
    # name: (change, substrings of the error)
    "missing_step": (_delete("step"), ["'step'", "lacks"]),
    "missing_batch_in_epoch": (_delete("batch_in_epoch"), ["'batch_in_epoch'", "lacks"]),
    "missing_rng": (_delete("rng"), ["'rng'", "lacks"]),
    "missing_optimizer": (_delete("optimizer"), ["'optimizer'", "lacks"]),
    "rng_torch_too_short": (_set(("rng", "torch"), [1, 2, 3]), ["'rng'", "random-number-generator state"]),
    "rng_torch_not_bytes": (_set(("rng", "torch"), "abc"), ["'rng'", "random-number-generator state"]),
    "rng_python_garbled": (_set(("rng", "python"), [3, [1, 2], None]), ["'rng'", "random-number-generator state"]),
    "step_is_text": (_set(("step",), "ten"), ["'step' = 'ten'", "not a valid int"]),
    "step_negative": (_set(("step",), -5), ["'step' = -5"]),
    "optimizer_groups_garbled": (_set(("optimizer", "param_groups"), [{"lr": 1}]), ["'optimizer'", "does not match"]),
}


@pytest.mark.parametrize("name", list(STATE_FAULTS))
def test_tampered_training_state_is_one_clear_error(run_dir, capsys, name):
    change, expected = STATE_FAULTS[name]
    edit_state(run_dir, change)
    err = resume_error(run_dir, capsys)
    assert str(run_dir / "last" / "state.json") in err, err
    for text in expected:
        assert text in err, err


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2, 3]", b"\xff\xfe"])
def test_unreadable_training_state_is_one_clear_error(run_dir, capsys, content):
    (run_dir / "last" / "state.json").write_bytes(content)
    err = resume_error(run_dir, capsys)
    assert str(run_dir / "last" / "state.json") in err and "cannot resume" in err, err


# ---------------------------------------------------------------------------- what --resume may change
@pytest.mark.parametrize("override, key", [
    ("model.emb_size=64", "model.emb_size"),
    ("model.rnn_type=lstm", "model.rnn_type"),
    ("train.max_tokens=999", "train.max_tokens"),
    ("train.seed=7", "train.seed"),
    ("tokenizer.vocab_size=300", "tokenizer.vocab_size"),
    ("data.max_length=20", "data.max_length"),
    ("data.path=/another/corpus", "data.path"),
    ("data.files={train: [a.en, a.de]}", "data.files"),
    ("data.clean_max_ratio=9", "data.clean_max_ratio"),
    ("train.init_from=/some/model", "train.init_from"),
])
def test_resume_refuses_settings_that_change_the_model_or_the_batches(run_dir, capsys, override, key):
    err = resume_error(run_dir, capsys, override)
    assert f"--resume cannot change {key}" in err and str(run_dir) in err, err


def test_resume_may_change_the_budget_and_the_learning_rate(run_dir, capsys):
    """Documented: the budget, the learning rate and validation settings may change on --resume."""
    argv = ["--out", str(run_dir), "--resume", "--set", "train.max_steps=52", "--set", "train.lr=0.001",
            "--set", "train.valid_bleu_sentences=5"]
    assert train_main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 52


def test_resuming_a_finished_run_trains_no_further(run_dir, capsys):
    """The state after the final validation of a 50-step run: --resume stops at once, still at step 50, under a
    step budget and under a time budget alike."""
    before = (run_dir / "last" / "model.safetensors").read_bytes()
    assert train_main(["--out", str(run_dir), "--resume"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 50
    assert (run_dir / "last" / "model.safetensors").read_bytes() == before
    # the same under a time budget already used up (the run took longer than 0.001 minutes)
    assert train_main(["--out", str(run_dir), "--resume", "--set", "train.max_steps=0",
                       "--set", "train.max_minutes=0.001"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 50 and summary["stop_reason"] == "reached the time budget of 0.001 minutes"
    assert (run_dir / "last" / "model.safetensors").read_bytes() == before


# ---------------------------------------------------------------------------- tokenizers already in --out
def new_run_argv(out: Path, corpus: Path, cache: Path, *overrides: str) -> list[str]:
    sets = [f"data.path={corpus}", f"data.cache_dir={cache}", "data.test_splits=[]", *TINY_OVERRIDES,
            "train.max_steps=1", *overrides]
    return ["--config", str(RECIPE), "--out", str(out), *[a for o in sets for a in ("--set", o)]]


def test_tokenizers_of_other_settings_in_out_are_an_error(run_dir, tiny_corpus, tmp_path, capsys):
    """A run stopped before its first save left config.yaml and tokenizers: a new run with another
    tokenizer.vocab_size is refused (not silently given the old vocabulary)."""
    shutil.rmtree(run_dir / "last")
    (run_dir / "model.safetensors").unlink()
    assert train_main(new_run_argv(run_dir, tiny_corpus, tmp_path / "cache", "tokenizer.vocab_size=300")) == 2
    err = capsys.readouterr().err
    assert "tokenizer.vocab_size = 400" in err and "asks for 300" in err and "Traceback" not in err, err
    assert str(run_dir / "tokenizer.src.model") in err  # what to delete


@pytest.mark.parametrize("override, expected", [
    ("tokenizer.vocab_size=200", "more than tokenizer.vocab_size = 200"),
    ("tokenizer.joint=true", "tokenizer.joint = True"),
])
def test_tokenizers_without_a_config_are_checked_by_their_vocabulary(tiny_model_dir, tiny_corpus, tmp_path, capsys,
                                                                      override, expected):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("tokenizer.src.model", "tokenizer.tgt.model"):
        shutil.copy(tiny_model_dir / name, out / name)
    assert train_main(new_run_argv(out, tiny_corpus, tmp_path / "cache", override)) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err


def test_tokenizers_without_a_config_count_their_byte_pieces_on_top(tiny_model_dir, tmp_path):
    """Byte fallback adds 256 pieces on top of tokenizer.vocab_size: the tiny model's tokenizers (400 + 256) are
    reused under vocab_size 400 (they were refused as "656 pieces, more than 400"), and still refused under 399."""
    from seq2seq.config import load_config
    from seq2seq.training.resume import check_reused_tokenizers
    from seq2seq.training import TrainingError

    out = tmp_path / "run"
    out.mkdir()
    for name in ("tokenizer.src.model", "tokenizer.tgt.model"):
        shutil.copy(tiny_model_dir / name, out / name)
    cfg = load_config(tiny_model_dir / "config.yaml")
    assert cfg.tokenizer.vocab_size == 400 and cfg.tokenizer.byte_fallback
    check_reused_tokenizers(cfg, out)
    cfg.tokenizer.vocab_size = 399
    with pytest.raises(TrainingError, match="more than tokenizer.vocab_size = 399 \\+ 256 byte pieces"):
        check_reused_tokenizers(cfg, out)


# ---------------------------------------------------------------------------- stopped before the first save
def test_a_run_stopped_before_its_first_validation_says_so(run_dir, capsys):
    (run_dir / "model.safetensors").unlink()  # last/ is there: the state of step 0 or of a save_every save
    with pytest.raises(CheckpointError, match="no model yet") as caught:
        Translator.load(run_dir, device="cpu")
    assert "--resume" in str(caught.value)
    shutil.rmtree(run_dir / "last")  # nothing saved at all
    with pytest.raises(CheckpointError, match="no model yet") as caught:
        Translator.load(run_dir, device="cpu")
    assert "training was stopped before the first save" in str(caught.value)
    err = resume_error(run_dir, capsys)
    assert f"no checkpoint yet in {run_dir}" in err and "start again without --resume" in err, err


# ---------------------------------------------------------------------------- limits of a tampered config.yaml
@pytest.mark.parametrize("key, value, allowed", [
    ("beam_size", 101, "in [1, 100]"),
    ("batch_size", 5000, "in [1, 4096]"),
    ("max_len_a", 10.5, "in [0, 10.0]"),
    ("max_len_b", 1001, "in [1, 1000]"),
])
def test_decode_limits_in_a_model_config_are_one_clear_error(run_dir, key, value, allowed):
    raw = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    raw["decode"][key] = value
    (run_dir / "config.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(CheckpointError) as caught:
        Translator.load(run_dir, device="cpu")
    message = str(caught.value)
    assert str(run_dir / "config.yaml") in message and f"decode.{key}" in message and allowed in message, message


@pytest.mark.parametrize("override", ["decode.beam_size=100", "decode.batch_size=4096", "decode.max_len_a=10",
                                      "decode.max_len_b=1000", "train.save_every=0"])
def test_the_limits_themselves_are_allowed(override):
    load_config(None, [override])


def test_save_every_may_not_be_negative():
    with pytest.raises(ConfigError, match="train.save_every"):
        load_config(None, ["train.save_every=-1"])


# ---------------------------------------------------------------------------- the compute dtypes a resume keeps
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

    monkeypatch.setattr(dtype_auto, "measure", no_measurement)
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
