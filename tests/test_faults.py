"""Faults: broken corpora, bad configs and flags, training failures, untrusted model directories.

Each fault gives one clear error naming the file (and line) or the key/flag and what is allowed: through the
command lines exit status 2, an ``error: ...`` line and never a traceback; through the API a ``CheckpointError``
(or ``TrainingError``). The command-line cases run as subprocesses, several at a time (see ``cli_faults``).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
import yaml
from conftest import REPO_ROOT, SUBPROCESS_ENV, TINY_OVERRIDES

from seq2seq.api import Translator
from seq2seq.checkpoint import (
    CheckpointError,
    find_training_state,
    load_model_dir,
    load_training_state,
    save_model_dir,
    save_training_state,
)
from seq2seq.config import load_config
from seq2seq.model import Seq2Seq
from seq2seq.training.optimizer import build_optimizer
from seq2seq.train import main as train_main
from seq2seq.train import train

RECIPE = REPO_ROOT / "configs" / "multi30k_en_de.yaml"
ENV = SUBPROCESS_ENV  # one torch thread, no GPU
#: the smallest model and fastest settings: faults show up before (or regardless of) any real training
SMALL = ["tokenizer.vocab_size=100", "model.emb_size=8", "model.encoder_hidden_size=8", "model.decoder_hidden_size=8",
         "train.threads=1", "data.test_splits=[]"]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def corpus_lines(corpus: Path, split: str, lang: str, n: int) -> list[bytes]:
    return (corpus / f"{split}.{lang}").read_bytes().splitlines(keepends=True)[:n]


def write_corpus(directory: Path, files: dict[str, bytes | list[bytes]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_bytes(content if isinstance(content, bytes) else b"".join(content))
    return directory


def model_copy(tiny_model_dir: Path, destination: Path) -> Path:
    """A copy of the tiny model directory (without the training records) that a test may damage."""
    shutil.copytree(tiny_model_dir, destination, ignore=shutil.ignore_patterns("*.log", "*.jsonl", "*.png"))
    return destination


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ============================================================================ command-line faults
@dataclass
class Case:
    argv: list  # after ``python -m``
    expect: list[str]  # substrings of stderr
    stdin: bytes | None = None
    result: subprocess.CompletedProcess | None = field(default=None, repr=False)


def gzipped(directory: Path, en: list[bytes], de: list[bytes], val: dict, damage) -> Path:
    """A corpus of .gz files whose train.de.gz is damaged by ``damage(compressed bytes)``."""
    import gzip

    files = {"train.en.gz": gzip.compress(b"".join(en)), "train.de.gz": damage(gzip.compress(b"".join(de)))}
    files.update({f"{name}.gz": gzip.compress(b"".join(lines)) for name, lines in val.items()})
    return write_corpus(directory, files)


def train_argv(data: Path, out: Path, cache: Path, *extra: str) -> list:
    sets = [arg for override in SMALL + [f"data.cache_dir={cache}"] for arg in ("--set", override)]
    return ["seq2seq.train", "--data", data, "--out", out, "--max-steps", "2", *sets, *extra]


def build_cases(base: Path, corpus: Path, model_dir: Path) -> dict[str, Case]:
    """Every command-line fault: its argv and the substrings its error must contain."""
    en, de = corpus_lines(corpus, "train", "en", 200), corpus_lines(corpus, "train", "de", 200)
    val = {"val.en": corpus_lines(corpus, "val", "en", 20), "val.de": corpus_lines(corpus, "val", "de", 20)}
    good = write_corpus(base / "good", {"train.en": en, "train.de": de, **val})

    def train_case(name: str, data: Path | dict, expect: list[str], *extra: str) -> Case:
        """Training on ``data`` (a directory, or files to write) into its own output and cache directories."""
        data = data if isinstance(data, Path) else write_corpus(base / name, data)
        return Case(train_argv(data, base / f"out-{name}", base / f"cache-{name}", *extra), expect)

    bad_utf8 = list(de)
    bad_utf8[2] = b"Ein Mann mit \xff\xfe kaputten Bytes\n"
    cases = {
        # corpora
        "corpus_missing_directory": train_case(
            "nowhere", base / "nowhere", [str(base / "nowhere"), "data directory not found", "data.path"]),
        "corpus_missing_target_file": train_case(
            "missing", {"train.en": en, **val}, [str(base / "missing" / "train.en"), str(base / "missing" / "train.de")]),
        "corpus_mismatched_counts": train_case(
            "mismatched", {"train.en": en, "train.de": de[:-1], **val}, ["train.en has 200 lines", "train.de has 199"]),
        "corpus_invalid_utf8": train_case(
            "bad_utf8", {"train.en": en, "train.de": bad_utf8, **val},
            [f"{base / 'bad_utf8' / 'train.de'}:3", "not valid UTF-8"]),
        "corpus_empty_training_split": train_case(
            "empty", {"train.en": b"", "train.de": b"", **val}, [str(base / "empty" / "train.en"), "no sentence pairs"]),
        "corpus_whitespace_only_training_split": train_case(
            "blank", {"train.en": b" \r\n\t\r\n\r\n", "train.de": "\r\n \r\n\u3000\r\n".encode(), **val},
            [str(base / "blank" / "train.en"), "no sentence pairs"]),
        # config keys and flags of training
        "train_unknown_key": train_case("unknown_key", good, ["train.bogus", "valid keys in 'train'", "max_tokens"],
                                        "--set", "train.bogus=1"),
        "train_wrong_type": train_case("wrong_type", good, ["train.lr", "must be a number", "fast"],
                                       "--set", "train.lr=fast"),
        "train_beam_size_0": train_case("beam_size_0", good, ["decode.beam_size", "in [1, 100]"], "--set",
                                        "decode.beam_size=0"),
        "train_beam_size_above_the_limit": train_case(
            "beam_size_big", good, ["decode.beam_size", "= 101", "in [1, 100]"], "--set", "decode.beam_size=101"),
        "train_max_len_b_above_the_limit": train_case(
            "max_len_b", good, ["decode.max_len_b", "in [1, 1000]"], "--set", "decode.max_len_b=100000"),
        "train_device_cuda_without_gpu": train_case(
            "cuda", good, ["'cuda'", "no CUDA GPU", "--device cpu"], "--device", "cuda"),
        "corpus_gzip_truncated": train_case(
            "gz_truncated", gzipped(base / "gz_truncated", en, de, val, damage=lambda b: b[: len(b) // 2]),
            [str(base / "gz_truncated" / "train.de.gz"), "damaged"]),
        "corpus_gzip_garbage": train_case(
            "gz_garbage", gzipped(base / "gz_garbage", en, de, val, damage=lambda b: b[:10] + b"garbage" * 50),
            [str(base / "gz_garbage" / "train.de.gz"), "damaged"]),
        "corpus_missing_validation_split": train_case(
            "no_val", {"train.en": en, "train.de": de}, ["split 'val' not found", "data.valid_split"]),
        "train_negative_max_steps_flag": train_case("max_steps", good, ["train.max_steps", ">= 0"], "--max-steps", "-1"),
        "train_max_tokens_smaller_than_a_sentence": train_case(
            "max_tokens", good, ["train.max_tokens = 10", "longest pair"], "--set", "train.max_tokens=10"),
        "train_vocab_larger_than_the_corpus_allows": train_case(
            "vocab", good, ["tokenizer.vocab_size = 50000", "tokenizer.vocab_size <="],
            "--set", "tokenizer.vocab_size=50000"),
        # translate / evaluate flags
        "translate_beam_size_0": Case(["seq2seq.translate", "--model", model_dir, "--beam-size", "0", "x"],
                                      ["--beam-size", ">= 1"]),
        "translate_nbest_above_beam": Case(["seq2seq.translate", "--model", model_dir, "--beam-size", "2", "--nbest", "3",
                                            "x"], ["--nbest", "beam size"]),
        "translate_batch_size_0": Case(["seq2seq.translate", "--model", model_dir, "--batch-size", "0", "x"],
                                       ["--batch-size", ">= 1"]),
        "translate_beam_size_above_the_limit": Case(
            ["seq2seq.translate", "--model", model_dir, "--beam-size", "1000", "x"], ["--beam-size", "<= 100"]),
        "translate_batch_size_above_the_limit": Case(
            ["seq2seq.translate", "--model", model_dir, "--batch-size", "100000", "x"], ["--batch-size", "<= 4096"]),
        "translate_model_nowhere": Case(["seq2seq.translate", "--model", base / "nowhere", "x"],
                                        [str(base / "nowhere"), "model directory not found"]),
        "translate_device_cuda_without_gpu": Case(["seq2seq.translate", "--model", model_dir, "--device", "cuda", "x"],
                                                  ["'cuda'", "no CUDA GPU"]),
        "translate_fp16_on_cpu": Case(["seq2seq.translate", "--model", model_dir, "--device", "cpu", "--dtype", "fp16",
                                       "x"], ["fp16", "CUDA", "bf16 or fp32"]),
        "translate_unwritable_plot_attention": Case(
            ["seq2seq.translate", "--model", model_dir, "--plot-attention", base / "no_such_dir" / "attn.png", "x"],
            ["--plot-attention", str(base / "no_such_dir"), "does not exist"]),
        "evaluate_beam_size_0": Case(["seq2seq.evaluate", "--model", model_dir, "--src", corpus / "val.en", "--ref",
                                      corpus / "val.de", "--beam-size", "0"], ["--beam-size", ">= 1"]),
        "evaluate_batch_size_0": Case(["seq2seq.evaluate", "--model", model_dir, "--src", corpus / "val.en", "--ref",
                                       corpus / "val.de", "--batch-size", "0"], ["--batch-size", ">= 1"]),
    }
    # untrusted model directories, through both command lines
    truncated = model_copy(model_dir, base / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    tagged = model_copy(model_dir, base / "tagged")
    (tagged / "config.yaml").write_text(f"model: !!python/object/apply:os.mkdir [{str(base / 'PWNED')!r}]\n")
    corrupt_tok = model_copy(model_dir, base / "corrupt_tokenizer")
    (corrupt_tok / "tokenizer.src.model").write_bytes(os.urandom(2000))
    cases["translate_truncated_weights"] = Case(["seq2seq.translate", "--model", truncated, "x"],
                                                [str(weights), "truncated"])
    cases["translate_config_with_python_tag"] = Case(["seq2seq.translate", "--model", tagged],
                                                     [str(tagged / "config.yaml"), "python/object"], stdin=b"x\n")
    cases["evaluate_corrupt_tokenizer"] = Case(
        ["seq2seq.evaluate", "--model", corrupt_tok, "--src", corpus / "val.en", "--ref", corpus / "val.de"],
        [str(corrupt_tok / "tokenizer.src.model"), "not a SentencePiece model"])
    return cases


@pytest.fixture(scope="module")
def cli_faults(tiny_corpus, tiny_model_dir, tmp_path_factory) -> dict[str, Case]:
    """Run every command-line fault once, four processes at a time (most of their time is Python imports)."""
    base = tmp_path_factory.mktemp("cli_faults")
    cases = build_cases(base, tiny_corpus, tiny_model_dir)

    def run(case: Case) -> None:
        case.result = subprocess.run([sys.executable, "-m", *map(str, case.argv)], input=case.stdin,
                                     capture_output=True, timeout=300, cwd=base, env=ENV)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(run, cases.values()))
    assert not (base / "PWNED").exists(), "a YAML python tag in config.yaml was executed"
    return cases


CASE_NAMES = [
    "corpus_missing_directory", "corpus_missing_target_file", "corpus_mismatched_counts", "corpus_invalid_utf8",
    "corpus_empty_training_split", "corpus_whitespace_only_training_split", "corpus_gzip_truncated",
    "corpus_gzip_garbage", "corpus_missing_validation_split",
    "train_unknown_key", "train_wrong_type", "train_beam_size_0", "train_negative_max_steps_flag",
    "train_max_tokens_smaller_than_a_sentence", "train_vocab_larger_than_the_corpus_allows",
    "train_beam_size_above_the_limit", "train_max_len_b_above_the_limit", "train_device_cuda_without_gpu",
    "translate_beam_size_0", "translate_nbest_above_beam", "translate_batch_size_0",
    "translate_beam_size_above_the_limit", "translate_batch_size_above_the_limit", "translate_model_nowhere",
    "translate_device_cuda_without_gpu", "translate_fp16_on_cpu", "translate_unwritable_plot_attention",
    "evaluate_beam_size_0", "evaluate_batch_size_0",
    "translate_truncated_weights", "translate_config_with_python_tag", "evaluate_corrupt_tokenizer",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cli_fault_is_one_clear_error(cli_faults, name):
    case = cli_faults[name]
    stderr = case.result.stderr.decode("utf-8", "replace")
    assert case.result.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "error: " in stderr
    for text in case.expect:
        assert text in stderr, f"{text!r} not in:\n{stderr[-3000:]}"
    assert case.result.stdout == b""


def test_every_cli_fault_has_a_test(cli_faults):
    assert sorted(cli_faults) == sorted(CASE_NAMES)


# ============================================================================ untrusted model directories
def _flip(offset: int):
    def mutate(d: Path) -> None:
        data = bytearray((d / "model.safetensors").read_bytes())
        data[offset] ^= 0xFF
        (d / "model.safetensors").write_bytes(bytes(data))
    return mutate


def _truncate(keep):
    def mutate(d: Path) -> None:
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: keep(len(data))])
    return mutate


def _rewrite_weights(change):
    def mutate(d: Path) -> None:
        state = safetensors.torch.load_file(str(d / "model.safetensors"))
        safetensors.torch.save_file(change(state), str(d / "model.safetensors"))
    return mutate


def _first_tensor_reshaped(state):
    name = next(iter(state))
    return {**state, name: torch.zeros(3, 3)}


def _edit_config(section: str, key: str, value):
    def mutate(d: Path) -> None:
        raw = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8"))
        raw[section][key] = value
        (d / "config.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return mutate


class _Exploit:
    """Unpickling this creates the directory ``path``: proof that a loader unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _pickle_as(name: str):
    def mutate(d: Path) -> None:
        (d / name).write_bytes(pickle.dumps({"weights": _Exploit(str(d / "PWNED"))}))
    return mutate


def _python_tag(d: Path) -> None:
    text = (d / "config.yaml").read_text(encoding="utf-8")
    (d / "config.yaml").write_text(
        text.replace("rnn_type: gru", f"rnn_type: !!python/object/apply:os.mkdir [{str(d / 'PWNED')!r}]"), encoding="utf-8")


MODEL_FAULTS = {
    # (mutation, file the error must name, another substring of the error)
    "weights_truncated_to_half": (_truncate(lambda n: n // 2), "model.safetensors", "truncated"),
    "weights_missing_last_byte": (_truncate(lambda n: n - 1), "model.safetensors", "truncated"),
    "weights_empty": (_truncate(lambda n: 0), "model.safetensors", "truncated"),
    "weights_header_length_flipped": (_flip(7), "model.safetensors", "safetensors"),
    "weights_header_json_flipped": (_flip(20), "model.safetensors", "safetensors"),
    "weights_tensor_of_the_wrong_shape": (_rewrite_weights(_first_tensor_reshaped), "model.safetensors", "shape"),
    "weights_tensor_missing": (_rewrite_weights(lambda s: dict(list(s.items())[1:])), "model.safetensors", "missing"),
    "weights_extra_tensor": (_rewrite_weights(lambda s: {**s, "evil": torch.zeros(1)}), "model.safetensors", "evil"),
    "weights_integer_dtype": (_rewrite_weights(lambda s: {k: v.long() for k, v in s.items()}), "model.safetensors",
                              "floating point"),
    "weights_nan": (_rewrite_weights(lambda s: {k: v * float("nan") for k, v in s.items()}), "model.safetensors", "NaN"),
    "weights_are_a_pickle": (_pickle_as("model.safetensors"), "model.safetensors", "safetensors"),
    "weights_missing": (lambda d: (d / "model.safetensors").unlink(), "model.safetensors", "missing"),
    "config_decoder_hidden_size_changed": (_edit_config("model", "decoder_hidden_size", 64), "model.safetensors",
                                           "config.yaml"),
    "config_rnn_type_changed": (_edit_config("model", "rnn_type", "lstm"), "model.safetensors", "config.yaml"),
    "config_huge_model": (_edit_config("model", "decoder_hidden_size", 10**11), "config.yaml", "cannot build"),
    "config_unknown_key": (_edit_config("model", "evil", 1), "config.yaml", "model.evil"),
    "config_python_tag": (_python_tag, "config.yaml", "python/object"),
    "config_not_utf8": (lambda d: (d / "config.yaml").write_bytes(b"\xff\xfe model: {"), "config.yaml", "YAML"),
    "config_missing": (lambda d: (d / "config.yaml").unlink(), "config.yaml", "missing"),
    "tokenizer_missing": (lambda d: (d / "tokenizer.tgt.model").unlink(), "tokenizer.tgt.model", "missing"),
    "tokenizer_random_bytes": (lambda d: (d / "tokenizer.src.model").write_bytes(os.urandom(5000)),
                               "tokenizer.src.model", "SentencePiece"),
    "tokenizer_truncated": (lambda d: (d / "tokenizer.tgt.model").write_bytes((d / "tokenizer.tgt.model").read_bytes()[:999]),
                            "tokenizer.tgt.model", "SentencePiece"),
    "tokenizer_is_a_pickle": (_pickle_as("tokenizer.src.model"), "tokenizer.src.model", "SentencePiece"),
}


@pytest.mark.parametrize("name", list(MODEL_FAULTS))
def test_damaged_model_directory_is_one_clear_error(tiny_model_dir, tmp_path, name):
    mutate, file_name, detail = MODEL_FAULTS[name]
    model_dir = model_copy(tiny_model_dir, tmp_path / "model")
    mutate(model_dir)
    started = time.perf_counter()
    with pytest.raises(CheckpointError) as caught:
        Translator.load(model_dir, device="cpu")
    message = str(caught.value)
    assert str(model_dir / file_name) in message, message
    assert detail in message, message
    assert time.perf_counter() - started < 30  # a config asking for a huge model fails without allocating it
    assert not (model_dir / "PWNED").exists(), "loading a model directory unpickled or ran a YAML python tag"


def test_the_library_never_unpickles():
    """No pickle-based loader anywhere in the package (weights: safetensors; config: YAML safe_load)."""
    for path in (REPO_ROOT / "seq2seq").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        for forbidden in ("torch.load(", "import pickle", "pickle.load", "yaml.load(", "unsafe_load", "full_load",
                          "weights_only=False", "yaml.Loader", "UnsafeLoader", "FullLoader", "numpy.load", "np.load("):
            assert forbidden not in source, f"{path.name} uses {forbidden}"


# ============================================================================ failed writes (disk full)
def _safetensors_disk_full(*args, **kwargs):
    raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def _oserror_disk_full(*args, **kwargs):
    raise ENOSPC


@pytest.mark.parametrize("failure", ["safetensors", "oserror"])
def test_disk_full_while_saving_a_model_keeps_the_previous_one(tiny_model_dir, tmp_path, monkeypatch, failure):
    model_dir = model_copy(tiny_model_dir, tmp_path / "model")
    cfg, model, src_tok, tgt_tok = load_model_dir(model_dir)
    before = snapshot(model_dir)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)  # different weights, so that a half-written file would show
    monkeypatch.setattr(safetensors.torch, "save_file",
                        _safetensors_disk_full if failure == "safetensors" else _oserror_disk_full)
    with pytest.raises(CheckpointError, match="No space left on device") as caught:
        save_model_dir(model_dir, cfg, model, src_tok, tgt_tok)
    assert str(model_dir / "model.safetensors") in str(caught.value)
    monkeypatch.undo()
    assert snapshot(model_dir) == before  # nothing changed, no temporary files left behind
    Translator.load(model_dir, device="cpu")


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

    def forward(self, *args, **kwargs):  # the training step calls forward with the targets: (loss, tokens)
        value, tokens = original(self, *args, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] in bad_calls:
                value = value * float("nan")
        return value, tokens

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


# ============================================================================ SIGKILL and --resume
def saved_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "last" / "state.json").read_text())["step"]
    except (OSError, ValueError):  # not there yet, or replaced while being read
        return -1


def test_sigkill_leaves_a_loadable_checkpoint_and_resume_finishes(tiny_corpus, tmp_path):
    """A real training process killed with SIGKILL a quarter second after its first validation: the model
    directory loads and ``--resume`` runs to the end (exactness after kills: tests/test_kill.py). The corpus also has the documented odd lines: CRLF line ends,
    whitespace-only lines (dropped) and a 1 MB line in training (dropped by data.max_length) and in validation
    (left out of the validation loss, truncated for validation BLEU)."""
    en, de = corpus_lines(tiny_corpus, "train", "en", 300), corpus_lines(tiny_corpus, "train", "de", 300)
    crlf = lambda lines: [line.rstrip(b"\n") + b"\r\n" for line in lines]  # noqa: E731
    huge_en, huge_de = b"a man " * 175_000 + b"\r\n", b"ein Mann " * 117_000 + b"\r\n"
    data = write_corpus(tmp_path / "corpus", {
        "train.en": crlf(en[:150]) + [b"  \t\r\n", huge_en] + crlf(en[150:]) + [b"\r\n"],
        "train.de": crlf(de[:150]) + [b"\r\n", huge_de] + crlf(de[150:]) + [b" \r\n"],
        "val.en": crlf(corpus_lines(tiny_corpus, "val", "en", 20)) + [huge_en],
        "val.de": crlf(corpus_lines(tiny_corpus, "val", "de", 20)) + [b"Ein Mann.\r\n"],  # short: BLEU stays quick
    })
    out = tmp_path / "run"
    sets = [a for o in SMALL + [f"data.cache_dir={tmp_path / 'cache'}", "train.max_tokens=600", "train.valid_every=2",
                                "train.log_every=1", "decode.max_src_length=20", "train.patience=0"]
            for a in ("--set", o)]
    command = [sys.executable, "-m", "seq2seq.train", "--data", str(data), "--out", str(out), "--max-steps", "40", *sets]
    log = (tmp_path / "first.log").open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 240
        while saved_step(out) < 2:  # the first validation's checkpoint (last/ also holds step 0)
            assert proc.poll() is None, (tmp_path / "first.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 240 s"
            time.sleep(0.05)
        time.sleep(0.25)  # in the next steps or checkpoints; tests/test_kill.py kills at chosen and random moments
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
        log.close()

    killed_at = json.loads((find_training_state(out) / "state.json").read_text())["step"]
    assert 2 <= killed_at < 40
    Translator.load(out, device="cpu").translate(["A man.", ""])
    resumed = subprocess.run([sys.executable, "-m", "seq2seq.train", "--out", str(out), "--resume"],
                             capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["step"] == 40
    assert f"resumed from {out / 'last'}" in resumed.stderr or f"resumed from {out / 'last.old'}" in resumed.stderr
    translator = Translator.load(out, device="cpu")
    assert len(translator.translate(["A man.", "Zwei Hunde."])) == 2
    # the documented handling of the odd lines
    train_log = (out / "train.log").read_text(encoding="utf-8")
    assert "dropped 2 pairs with an empty side" in train_log  # whitespace-only lines
    assert "longer than data.max_length" in train_log  # the 1 MB training line
    assert "validation loss leaves out 1 pairs" in train_log  # the 1 MB validation line
    vocabulary = [translator.src_tokenizer.id_to_piece(i) for i in range(translator.src_tokenizer.vocab_size)]
    assert not any("\r" in piece for piece in vocabulary)  # CRLF line ends never reach the tokenizer
