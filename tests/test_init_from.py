"""Fine-tuning (``python -m seq2seq.train --init-from MODEL``, seq2seq/training/init_from.py): the first step starts
from the model's weights (checked against Adam's bound on a first step), the run keeps its tokenizers and
architecture with its own optimizer and schedule, a contradicting config key is refused naming it, an interrupted
fine-tuning resumes bit for bit, ``hf:ORG/NAME`` works offline, and config.yaml and the model card say where the
run started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import yaml
from conftest import REPO_ROOT, train_until_interrupted
from support.hub_cache import add_snapshot, model_files
from support.runs import assert_same_weights, train_records

from seq2seq.config import load_config
from seq2seq.train import main, train

#: the tiny model's run settings a fine-tuning run repeats (they are not the model's: a run chooses them)
RUN_SETTINGS = ["train.device=cpu", "train.threads=1", "train.dtype=fp32", "decode.dtype=fp32", "train.ema_decay=0",
                "train.warmup_steps=0", "train.max_minutes=0", "train.scheduler=plateau", "train.log_every=1",
                "train.valid_bleu_sentences=5", "data.test_splits=[]", "decode.max_len_b=5"]


def fine_tune_argv(model: str, corpus: Path, out: Path, cache: Path, *overrides: str) -> list[str]:
    sets = [*RUN_SETTINGS, f"data.cache_dir={cache}", *overrides]
    return ["--init-from", model, "--data", str(corpus), "--out", str(out), *[a for s in sets for a in ("--set", s)]]


def last_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_the_first_step_starts_from_the_models_weights(tiny_model_dir, tiny_corpus, tmp_path):
    """One Adam step moves each weight by at most the learning rate (its first update is lr * g / (|g| + eps)):
    after one step at lr 1e-5 every weight is within 1e-5 (+ rounding) of the model's, while a model built afresh
    differs by ~0.1; some weights moved (the step happened). The run keeps the model's tokenizers, architecture
    and languages, with its own learning rate and a fresh step count."""
    out = tmp_path / "ft"
    argv = fine_tune_argv(str(tiny_model_dir), tiny_corpus, out, tmp_path / "cache", "train.lr=0.00001",
                          "train.max_steps=1", "train.valid_every=1", "model.dropout=0.3")
    assert main(argv) == 0
    base = safetensors.torch.load_file(str(tiny_model_dir / "model.safetensors"))
    after = safetensors.torch.load_file(str(out / "last" / "model.safetensors"))
    assert base.keys() == after.keys()
    largest = max(float((after[k] - base[k]).abs().max()) for k in base)
    assert 0.9e-5 <= largest <= 1e-5 + 5e-7, largest
    for name in ("tokenizer.src.model", "tokenizer.tgt.model"):
        assert (out / name).read_bytes() == (tiny_model_dir / name).read_bytes()
    saved, base_cfg = load_config(out / "config.yaml"), load_config(tiny_model_dir / "config.yaml")
    assert saved.train.init_from == str(tiny_model_dir)
    assert saved.model.dropout == 0.3  # a training-only key the run may change
    base_cfg.model.dropout = 0.3
    assert saved.model == base_cfg.model and saved.tokenizer == base_cfg.tokenizer
    assert (saved.data.src_lang, saved.data.tgt_lang) == ("en", "de")
    records = [r for r in train_records(out) if r["type"] == "train"]
    assert [r["step"] for r in records] == [1] and records[0]["lr"] == pytest.approx(1e-5)
    assert json.loads((out / "last" / "state.json").read_text(encoding="utf-8"))["step"] == 1


@pytest.mark.parametrize("overrides, key", [
    (["--set", "model.emb_size=64"], "model.emb_size"),
    (["--set", "tokenizer.vocab_size=300"], "tokenizer.vocab_size"),
    (["--set", "model.input_feeding=false"], "model.input_feeding"),
    (["--config", str(REPO_ROOT / "configs" / "multi30k_en_de.yaml")], "model.emb_size"),  # 256 against 32
])
def test_a_key_that_contradicts_the_model_is_refused_naming_it(tiny_model_dir, tiny_corpus, tmp_path, capsys,
                                                               overrides, key):
    out = tmp_path / "ft"
    argv = fine_tune_argv(str(tiny_model_dir), tiny_corpus, out, tmp_path / "cache", "train.max_steps=1") + overrides
    assert main(argv) == 2
    line = last_error_line(capsys)
    assert line.startswith(f"error: config key '{key}'") and "contradicts the model to fine-tune" in line, line
    assert str(tiny_model_dir / "config.yaml") in line and "--init-from" in line, line
    assert not (out / "last").exists()


def test_a_missing_model_is_one_error_naming_it(tiny_corpus, tmp_path, capsys):
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    argv = fine_tune_argv(str(not_a_model), tiny_corpus, tmp_path / "ft", tmp_path / "cache")
    assert main(argv) == 2
    line = last_error_line(capsys)
    assert str(not_a_model / "config.yaml") in line and "--init-from" in line, line


def test_an_interrupted_fine_tuning_resumes_exactly(tiny_model_dir, tiny_corpus, tmp_path, monkeypatch):
    """Fine-tuning interrupted inside step 5 and resumed ends where the uninterrupted fine-tuning does, weights and
    optimizer bit for bit; the resumed run keeps train.init_from and may not change it."""
    cfg = load_config(tiny_model_dir / "config.yaml", [
        f"train.init_from={tiny_model_dir}", f"data.cache_dir={tmp_path / 'cache'}", *RUN_SETTINGS,
        "model.dropout=0.1", "train.max_steps=8", "train.valid_every=4", "train.lr=0.001"])
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert train(cfg, full)["step"] == 8
    train_until_interrupted(cfg, resumed, 5, monkeypatch)
    assert main(["--out", str(resumed), "--resume"]) == 0  # the run's own config.yaml, with its train.init_from
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert_same_weights(full / "last" / name, resumed / "last" / name)
    assert load_config(resumed / "config.yaml").train.init_from == str(tiny_model_dir)
    assert main(["--out", str(resumed), "--resume", "--init-from", str(full)]) == 2


def test_fine_tuning_from_the_hub_offline_and_the_card_says_so(tiny_model_dir, tiny_corpus, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from seq2seq.model_card import model_card

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    add_snapshot(cache, "org/tiny", "a" * 40, model_files(tiny_model_dir), ref="main")
    out = tmp_path / "ft"
    argv = fine_tune_argv("hf:org/tiny", tiny_corpus, out, tmp_path / "cache", "train.max_steps=2",
                          "train.valid_every=2")
    assert main(argv) == 0
    assert yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))["train"]["init_from"] == "hf:org/tiny"
    card = model_card(out, load_config(out / "config.yaml"), "org/tiny-ft")
    front = yaml.safe_load(card.split("---\n", 2)[1])
    assert front["base_model"] == "org/tiny"
    assert "fine-tuned from `hf:org/tiny`" in card and "**initialized from**: hf:org/tiny" in card


def test_a_weights_file_is_taken_as_its_model_directory(tiny_model_dir):
    """``--model DIR/model.safetensors`` loads DIR; last/'s copy and other files are one error saying what to pass."""
    from seq2seq.checkpoint import CheckpointError, load_model_dir

    cfg, _, _, _ = load_model_dir(tiny_model_dir / "model.safetensors")
    assert cfg == load_config(tiny_model_dir / "config.yaml")
    with pytest.raises(CheckpointError, match="training state's copy of the weights.*pass the run directory"):
        load_model_dir(tiny_model_dir / "last" / "model.safetensors")
    with pytest.raises(CheckpointError, match="is a file; pass the model directory"):
        load_model_dir(tiny_model_dir / "config.yaml")
