"""The training loop: exact resume, the model directory it writes, stopping, errors, options, the CLI.

Every run trains the tiny recipe (``TINY_OVERRIDES``) on ``tiny_corpus`` for a handful of steps on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from conftest import REPO_ROOT, SUBPROCESS_ENV, TINY_OVERRIDES, train_until_interrupted
from support.runs import RECIPE, assert_same_weights, losses_by_step, reuse_tokenizers, tiny_config, train_records

from seq2seq.config import load_config
from seq2seq.train import TrainingError, main, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Dropout > 0 makes the RNG state part of what resume has to restore; a validation at step 10 lands mid-run.
RESUME_OVERRIDES = [
    "model.dropout=0.1", "train.valid_every=10", "train.log_every=1", "train.max_steps=20",
    "train.valid_bleu_sentences=20",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train_cache")


@pytest.fixture(scope="module")
def run_20(tiny_corpus, cache_dir, tmp_path_factory):
    """One uninterrupted 20-step run, with a test split so that results.json has scores."""
    cfg = tiny_config(tiny_corpus, cache_dir, *RESUME_OVERRIDES, test_splits="[test_2016_flickr]")
    out = tmp_path_factory.mktemp("run_20")
    summary = train(cfg, out)
    return cfg, out, summary


# ---------------------------------------------------------------------------- exact resume
def test_resume_continues_exactly_where_training_stopped(run_20, tiny_corpus, cache_dir, tmp_path):
    _, full_dir, _ = run_20
    cfg_20 = tiny_config(tiny_corpus, cache_dir, *RESUME_OVERRIDES)
    cfg_10 = tiny_config(tiny_corpus, cache_dir, *RESUME_OVERRIDES, "train.max_steps=10")
    out = tmp_path / "run"
    first = train(cfg_10, out)
    assert first["step"] == 10
    second = train(cfg_20, out, resume=True)
    assert second["step"] == 20

    full, resumed = losses_by_step(full_dir), losses_by_step(out)
    assert sorted(resumed) == list(range(1, 21))
    for step in range(1, 21):
        assert resumed[step] == pytest.approx(full[step], abs=1e-6), f"loss differs at step {step}"
    assert_same_weights(full_dir / "last" / "model.safetensors", out / "last" / "model.safetensors")


def test_interrupt_saves_state_and_resume_finishes_the_run(run_20, tiny_corpus, cache_dir, tmp_path, monkeypatch):
    """Ctrl-C (SIGINT) inside step 14, after its update: the step completes, last/ is saved at step 14, and
    --resume ends where the full run did."""
    _, full_dir, _ = run_20
    cfg = tiny_config(tiny_corpus, cache_dir, *RESUME_OVERRIDES)
    out = tmp_path / "run"
    reuse_tokenizers(full_dir, out)
    summary = train_until_interrupted(cfg, out, 14, monkeypatch)  # steps 1..14 are done
    assert summary["step"] == 14
    state = json.loads((out / "last" / "state.json").read_text(encoding="utf-8"))
    assert state["step"] == 14
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert (out / "last" / name).is_file()

    resumed = train(cfg, out, resume=True)
    assert resumed["step"] == 20
    assert resumed["stop_reason"] == "reached train.max_steps = 20"
    full, losses = losses_by_step(full_dir), losses_by_step(out)
    assert sorted(losses) == list(range(1, 21))
    for step in range(15, 21):
        assert losses[step] == pytest.approx(full[step], abs=1e-6), f"loss differs at step {step}"
    assert_same_weights(full_dir / "last" / "model.safetensors", out / "last" / "model.safetensors")


@pytest.mark.parametrize("dtype", ["bf16", "auto"])
def test_interrupt_and_resume_are_exact_under_bf16_and_auto(dtype, run_20, tiny_corpus, cache_dir, tmp_path,
                                                            monkeypatch):
    """The default compute dtype (auto: fp32 or bf16, measured once and cached) and bf16 autocast: a run
    interrupted at step 5 and resumed ends bit for bit where the uninterrupted run does (CPU autocast is
    deterministic), weights and optimizer state alike."""
    _, tokenizer_dir, _ = run_20
    cfg = tiny_config(tiny_corpus, cache_dir, "model.dropout=0.1", f"train.dtype={dtype}", "train.max_steps=8",
                      "train.valid_every=4", "train.log_every=1", "train.valid_bleu_sentences=5")
    full_dir, out = tmp_path / "full", tmp_path / "resumed"
    for directory in (full_dir, out):
        reuse_tokenizers(tokenizer_dir, directory)
    train(cfg, full_dir)
    train_until_interrupted(cfg, out, 5, monkeypatch)
    assert train(cfg, out, resume=True)["step"] == 8
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert_same_weights(full_dir / "last" / name, out / "last" / name)
    if dtype == "bf16":
        assert "training compute torch.bfloat16" in (out / "train.log").read_text(encoding="utf-8")


def test_budget_schedule_and_weight_average_resume_exactly(run_20, tiny_corpus, cache_dir, tmp_path, monkeypatch):
    """Linear annealing to the end of max_steps with an EMA of the weights: the learning rates follow the formula,
    an interrupted run resumes to the uninterrupted one bit for bit (weights, average), the best model is
    whichever weights validated higher."""
    _, tokenizer_dir, _ = run_20
    overrides = [*RESUME_OVERRIDES, "train.scheduler=linear", "train.warmup_steps=3", "train.min_lr=0.0001",
                 "train.ema_decay=0.9"]
    cfg = tiny_config(tiny_corpus, cache_dir, *overrides)
    full_dir = tmp_path / "full"
    reuse_tokenizers(tokenizer_dir, full_dir)
    full_summary = train(cfg, full_dir)

    # lr of step s (1-based) = min(1, s / 3) * (1e-4 + (3e-3 - 1e-4) * (1 - (s - 1) / 20))
    lrs = {r["step"]: r["lr"] for r in train_records(full_dir) if r["type"] == "train"}
    for step in (1, 2, 3, 10, 20):
        expected = min(1.0, step / 3) * (1e-4 + 2.9e-3 * (1 - (step - 1) / 20))
        assert lrs[step] == pytest.approx(expected), step
    valid = [r for r in train_records(full_dir) if r["type"] == "valid"]
    for record in valid:
        assert record["val_bleu"] == max(record["raw_bleu"], record["average_bleu"])
        assert record["weights"] == ("raw" if record["raw_bleu"] >= record["average_bleu"] else "average")

    out = tmp_path / "resumed"
    reuse_tokenizers(tokenizer_dir, out)
    train_until_interrupted(cfg, out, 14, monkeypatch)
    resumed = train(cfg, out, resume=True)
    assert resumed["step"] == 20 and resumed["best_bleu"] == full_summary["best_bleu"]
    for name in ("model.safetensors", "average.safetensors"):
        assert_same_weights(full_dir / "last" / name, out / "last" / name)
    assert_same_weights(full_dir / "model.safetensors", out / "model.safetensors")


def test_the_average_is_kept_as_the_model_when_it_validates_higher(run_20, tiny_corpus, cache_dir, tmp_path,
                                                                    monkeypatch):
    """Scripted validation scores (raw 1.0, average 2.0): model.safetensors must hold the averaged weights, and
    training must go on from the raw weights (last/model.safetensors differs from the average)."""
    import seq2seq.training.model_selection as model_selection

    _, tokenizer_dir, _ = run_20
    cfg = tiny_config(tiny_corpus, cache_dir, "train.max_steps=6", "train.valid_every=6", "train.ema_decay=0.5")
    real_validate, calls = model_selection.validate, []

    def scripted_validate(*args, **kwargs):
        result = real_validate(*args, **kwargs)  # the real work, then a scripted BLEU: raw first, then average
        calls.append(len(calls))
        return dict(result, bleu=1.0 if len(calls) % 2 else 2.0)

    monkeypatch.setattr(model_selection, "validate", scripted_validate)
    out = tmp_path / "run"
    reuse_tokenizers(tokenizer_dir, out)
    summary = train(cfg, out)
    assert len(calls) == 2 and summary["best_weights"] == "average" and summary["best_bleu"] == 2.0
    kept = safetensors.torch.load_file(str(out / "model.safetensors"))
    average = safetensors.torch.load_file(str(out / "last" / "average.safetensors"))
    raw = safetensors.torch.load_file(str(out / "last" / "model.safetensors"))
    assert all(torch.equal(kept[name], average[name]) for name in kept)
    assert any(not torch.equal(raw[name], average[name]) for name in raw)
    record = [r for r in train_records(out) if r["type"] == "valid"][-1]
    assert (record["weights"], record["raw_bleu"], record["average_bleu"]) == ("average", 1.0, 2.0)


class Crash(Exception):
    """Stands for the process dying (the loop never sees it coming)."""


@pytest.mark.parametrize("save_every, saved_step", [(0.0001, 4), (0.0, 0), (5.0, 0)])
def test_training_state_is_saved_by_time_and_at_the_start(run_20, tiny_corpus, cache_dir, tmp_path, monkeypatch,
                                                          save_every, saved_step):
    """No validation before the crash in step 5: last/ holds step 4 when train.save_every minutes have passed
    since each save (0.0001: after every step), and step 0, saved as the run starts, otherwise (0 = only at
    validation; 5 = the default, not reached). Either way --resume then finishes the run."""
    import seq2seq.train as train_module

    _, tokenizer_dir, _ = run_20
    cfg = tiny_config(tiny_corpus, cache_dir, "train.max_steps=6", "train.valid_every=1000",
                      "train.valid_bleu_sentences=5", f"train.save_every={save_every}")
    out = tmp_path / "run"
    reuse_tokenizers(tokenizer_dir, out)
    real_step, calls = train_module.train_step, {"n": 0}

    def crashing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Crash
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", crashing_step)
    with pytest.raises(Crash):
        train(cfg, out)
    monkeypatch.undo()
    assert json.loads((out / "last" / "state.json").read_text(encoding="utf-8"))["step"] == saved_step
    assert not (out / "model.safetensors").exists()  # no validation yet
    assert train(cfg, out, resume=True)["step"] == 6


def test_a_second_ctrl_c_stops_at_once_without_saving(run_20, tiny_corpus, cache_dir, tmp_path, monkeypatch, capsys):
    """Two SIGINTs inside step 3: the first asks for a stop at the step boundary, the second stops at once (exit
    130) without saving, so last/ keeps the state saved when the run started (step 0); --resume then finishes."""
    _, tokenizer_dir, _ = run_20
    overrides = [*RESUME_OVERRIDES, "train.max_steps=5", f"data.cache_dir={cache_dir}", "data.test_splits=[]"]
    argv = ["--config", str(RECIPE), "--data", str(tiny_corpus), "--out", str(tmp_path / "run"),
            *[a for o in TINY_OVERRIDES + overrides for a in ("--set", o)]]
    reuse_tokenizers(tokenizer_dir, tmp_path / "run")
    real_step, calls = torch.amp.GradScaler.step, {"n": 0}
    handler_before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job

    def twice_interrupted_step(self, optimizer, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # raises KeyboardInterrupt here, before the update
        return real_step(self, optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.amp.GradScaler, "step", twice_interrupted_step)
    assert main(argv) == 130
    assert "interrupted twice" in capsys.readouterr().err
    monkeypatch.undo()
    assert json.loads((tmp_path / "run" / "last" / "state.json").read_text(encoding="utf-8"))["step"] == 0
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handlers are restored
    assert main(["--out", str(tmp_path / "run"), "--resume"]) == 0


# ---------------------------------------------------------------------------- what a run leaves behind
def test_run_directory_holds_the_complete_model_and_its_records(run_20):
    cfg, out, summary = run_20
    assert summary["step"] == 20
    assert load_config(out / "config.yaml") == cfg
    for name in ("tokenizer.src.model", "tokenizer.tgt.model", "model.safetensors", "train.log"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("model.safetensors", "optimizer.safetensors", "state.json"):
        assert (out / "last" / name).is_file(), f"last/{name}"
    assert (out / "curves.png").read_bytes()[:8] == PNG_MAGIC

    records = train_records(out)
    train_recs = [r for r in records if r["type"] == "train"]
    valid_recs = [r for r in records if r["type"] == "valid"]
    assert [r["step"] for r in train_recs] == list(range(1, 21))
    assert [r["step"] for r in valid_recs] == [10, 20]
    for r in train_recs:
        assert {"step", "loss", "ppl", "lr", "tokens_per_s", "elapsed_min"} <= r.keys()
        assert math.isfinite(r["loss"]) and r["ppl"] > 1 and r["tokens_per_s"] > 0
    for r in valid_recs:
        assert {"val_bleu", "val_loss", "val_ppl"} <= r.keys()
        assert math.isfinite(r["val_loss"]) and 0 <= r["val_bleu"] <= 100

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(results) == {"test_2016_flickr"}
    assert set(results["test_2016_flickr"]) == {"greedy", "beam3"}
    for name, result in results["test_2016_flickr"].items():
        expected_keys = {"bleu", "chrf", "bleu_signature", "chrf_signature", "decode_seconds", "sentences_per_second"}
        assert expected_keys <= result.keys()
        assert result["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:"), name
        assert result["chrf_signature"].startswith("nrefs:1|"), name
        assert result["sentences"] == 100 and result["sentences_per_second"] > 0
    assert summary["test"] == results
    assert json.loads((out / "confidence.json").read_text(encoding="utf-8"))["split"] == "val"  # calibrated at the end


def test_saved_model_loads_without_pickle(run_20, monkeypatch):
    from seq2seq.translator import Translator

    _, out, _ = run_20
    with safetensors.safe_open(str(out / "model.safetensors"), framework="pt") as weights:
        names = list(weights.keys())
        assert names and all(weights.get_tensor(name).dtype == torch.float32 for name in names)

    def forbidden(*args, **kwargs):
        raise AssertionError("a model directory must load without unpickling")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, forbidden)
    translator = Translator.load(out, device="cpu")
    assert isinstance(translator.translate("a man is riding a bike", beam_size=1), str)


# ---------------------------------------------------------------------------- stopping and errors
def test_early_stopping_stops_before_max_steps(run_20, tiny_corpus, cache_dir, tmp_path):
    """With a vanishing learning rate BLEU cannot improve after the first validation: patience 1 stops at 10."""
    _, full_dir, _ = run_20
    cfg = tiny_config(tiny_corpus, cache_dir, "train.lr=1e-9", "train.min_lr=0.0", "train.patience=1",
                      "train.valid_every=5", "train.max_steps=40", "train.valid_bleu_sentences=10")
    out = tmp_path / "run"
    reuse_tokenizers(full_dir, out)
    summary = train(cfg, out)
    assert summary["stop_reason"].startswith("early stopping"), summary["stop_reason"]
    assert summary["step"] == 10
    assert summary["best_step"] == 5


def test_a_periodic_validation_just_before_the_end_of_the_budget_is_skipped(run_20, tiny_corpus, cache_dir, tmp_path):
    """valid_every 9 with max_steps 20: validations at 9 and 20; the one at 18 (2 steps before the end, under half
    an interval) is skipped because the final validation follows."""
    _, full_dir, _ = run_20
    cfg = tiny_config(tiny_corpus, cache_dir, "train.max_steps=20", "train.valid_every=9", "train.valid_bleu_sentences=5")
    out = tmp_path / "run"
    reuse_tokenizers(full_dir, out)
    train(cfg, out)
    assert [r["step"] for r in train_records(out) if r["type"] == "valid"] == [9, 20]


def test_resume_without_a_run_is_a_clear_error(tiny_corpus, cache_dir, tmp_path, capsys):
    cfg = tiny_config(tiny_corpus, cache_dir)
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(cfg, tmp_path / "empty", resume=True)
    assert main(["--out", str(tmp_path / "empty2"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "Traceback" not in err


def test_training_into_an_existing_run_needs_resume(run_20, tiny_corpus, cache_dir, tmp_path):
    _, full_dir, _ = run_20
    out = tmp_path / "run"
    shutil.copytree(full_dir / "last", out / "last")
    with pytest.raises(TrainingError, match="--resume"):
        train(tiny_config(tiny_corpus, cache_dir), out)


def test_a_new_run_on_the_same_corpus_reuses_the_cached_tokenizers(tiny_corpus, tmp_path):
    """Tokenizers are trained once per corpus and tokenizer.* settings (cached under data.cache_dir): a second run
    into a new --out gets the same models without training, so it also finds its tokenized corpus in the cache;
    another vocabulary size trains anew."""
    cache = tmp_path / "cache"
    runs = [tmp_path / name for name in ("first", "second", "other_vocab")]
    for out, overrides in zip(runs, ([], [], ["tokenizer.vocab_size=300"])):
        train(tiny_config(tiny_corpus, cache, "train.max_steps=1", "train.valid_bleu_sentences=2", *overrides), out)
    logs = [(out / "train.log").read_text(encoding="utf-8") for out in runs]
    assert "tokenizers trained in" in logs[0] and "trained earlier on this corpus" not in logs[0]
    assert "tokenizers trained in" not in logs[1] and "trained earlier on this corpus" in logs[1]
    assert "tokenizers trained in" in logs[2]
    for name in ("tokenizer.src.model", "tokenizer.tgt.model"):
        assert (runs[1] / name).read_bytes() == (runs[0] / name).read_bytes()
        assert (runs[2] / name).read_bytes() != (runs[0] / name).read_bytes()
    assert len(list((cache / "tokenizers").iterdir())) == 2  # one pair per setting; no half-written leftovers


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize("overrides", [
    ["train.accumulate=2", "train.teacher_forcing_ratio=0.5"],
    ["train.scheduler=inverse_sqrt", "train.warmup_steps=2", "train.optimizer=adamw", "train.weight_decay=0.01"],
    ["train.dtype=bf16"],
], ids=["accumulate-scheduled-sampling", "inverse-sqrt-adamw", "bf16-cpu"])
def test_training_options_run_with_finite_losses(overrides, run_20, tiny_corpus, cache_dir, tmp_path):
    _, full_dir, _ = run_20
    cfg = tiny_config(tiny_corpus, cache_dir, "train.max_steps=3", "train.log_every=1", "train.valid_every=1000",
                      "train.valid_bleu_sentences=5", "train.device=cpu", *overrides)
    out = tmp_path / "run"
    reuse_tokenizers(full_dir, out)
    summary = train(cfg, out)
    assert summary["step"] == 3
    records = [r for r in train_records(out) if r["type"] == "train"]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    state = json.loads((out / "last" / "state.json").read_text(encoding="utf-8"))
    assert state["batch_in_epoch"] == 3 * cfg.train.accumulate  # each step consumed `accumulate` batches
    if cfg.train.dtype == "bf16":
        assert "compute torch.bfloat16" in (out / "train.log").read_text(encoding="utf-8")
    if cfg.train.scheduler == "inverse_sqrt":
        lrs = [r["lr"] for r in records]
        assert lrs == pytest.approx([0.0015, 0.003, 0.003 * math.sqrt(2 / 3)])


# ---------------------------------------------------------------------------- command line
def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seq2seq.train", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, env=SUBPROCESS_ENV)


def test_cli_help():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "--resume" in result.stdout and "--set" in result.stdout


def test_cli_trains_a_few_steps(tiny_corpus, cache_dir, tmp_path):
    sets = [arg for override in TINY_OVERRIDES for arg in ("--set", override)]
    out = tmp_path / "run"
    result = run_cli("--config", str(RECIPE), "--data", str(tiny_corpus), "--out", str(out), "--max-steps", "5",
                     *sets, "--set", f"data.cache_dir={cache_dir}", "--set", "data.test_splits=[]",
                     "--set", "train.valid_bleu_sentences=5")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["step"] == 5
    assert (out / "model.safetensors").is_file() and (out / "last" / "state.json").is_file()


def test_cli_bad_override_key_exits_2_naming_the_key(tmp_path):
    result = run_cli("--out", str(tmp_path / "run"), "--set", "train.learning_rate=0.1")
    assert result.returncode == 2
    assert "train.learning_rate" in result.stderr
    assert "Traceback" not in result.stderr
