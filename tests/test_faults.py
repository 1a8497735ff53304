"""Command-line faults: broken corpora, bad configs and flags, damaged model directories given to the commands.
(Model directories and states through the API: test_checkpoint.py; training faults in process:
test_training_faults.py; SIGKILL then --resume: test_kill.py.)

Each fault gives one clear error naming the file (and line) or the key/flag and what is allowed: through the
command lines exit status 2, an ``error: ...`` line and never a traceback; through the API a ``CheckpointError``
(or ``TrainingError``). The command-line cases run as subprocesses, several at a time (see ``cli_faults``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, SUBPROCESS_ENV
from support.faults import SMALL, corpus_lines, model_copy, write_corpus

RECIPE = REPO_ROOT / "configs" / "multi30k_en_de.yaml"
ENV = SUBPROCESS_ENV  # one torch thread, no GPU


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
        # without a validation split a tenth is held out (tests/test_own_corpus.py); 9 pairs are too few for that
        "corpus_missing_validation_split": train_case(
            "no_val", {"train.en": en[:9], "train.de": de[:9]},
            ["split 'val' not found", "too few to hold out", "val.{lang} files", "data.files.val"]),
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
    # issue 37: damaged ONNX graphs, flags that conflict, empty files, a directory for the weights, unbounded text
    from seq2seq.checkpoint import load_model_dir
    from seq2seq.onnx_export import export_onnx

    exported = model_copy(model_dir, base / "exported")
    export_onnx(load_model_dir(exported)[1], exported / "onnx")
    damaged_encoder = model_copy(exported, base / "damaged_encoder")
    (damaged_encoder / "onnx" / "encoder.onnx").write_bytes(os.urandom(3000))
    truncated_step = model_copy(exported, base / "truncated_step")
    step = truncated_step / "onnx" / "decoder_step.onnx"
    step.write_bytes(step.read_bytes()[: step.stat().st_size // 3])
    cases["translate_onnx_damaged_encoder"] = Case(
        ["seq2seq.translate", "--model", damaged_encoder, "--backend", "onnx", "x"],
        [str(damaged_encoder / "onnx" / "encoder.onnx"), "python -m seq2seq.onnx_export"])
    cases["translate_onnx_truncated_step"] = Case(
        ["seq2seq.translate", "--model", truncated_step, "--backend", "onnx", "x"],
        [str(step), "not the graph that was exported"])
    cases["translate_onnx_with_bf16"] = Case(
        ["seq2seq.translate", "--model", exported, "--backend", "onnx", "--dtype", "bf16", "x"],
        ["--backend onnx", "runs fp32", "--dtype bf16"])
    weights_dir = model_copy(model_dir, base / "weights_dir")
    (weights_dir / "model.safetensors").unlink()
    (weights_dir / "model.safetensors").mkdir()
    cases["translate_weights_is_a_directory"] = Case(["seq2seq.translate", "--model", weights_dir, "x"],
                                                     [str(weights_dir / "model.safetensors"), "is not a file"])
    (base / "empty.en").write_bytes(b"")
    (base / "empty.de").write_bytes(b"")
    cases["evaluate_empty_src_and_ref"] = Case(
        ["seq2seq.evaluate", "--model", model_dir, "--src", base / "empty.en", "--ref", base / "empty.de"],
        ["--ref", str(base / "empty.de"), "is empty"])
    cases["evaluate_empty_src"] = Case(
        ["seq2seq.evaluate", "--model", model_dir, "--src", base / "empty.en", "--ref", corpus / "val.de"],
        ["--src", str(base / "empty.en"), "is empty"])
    cases["evaluate_empty_hyp"] = Case(["seq2seq.evaluate", "--hyp", base / "empty.de", "--ref", corpus / "val.de"],
                                       ["--hyp", str(base / "empty.de"), "is empty"])
    cases["translate_prefix_of_3000_words"] = Case(
        ["seq2seq.translate", "--model", model_dir, "--prefix", " ".join(["ein Mann"] * 1500), "x"],
        ["prefix 1 has 3000 target pieces; the limit is", "decode.max_len_b"])
    (base / "one.en").write_text("a man .\n", encoding="utf-8")
    (base / "long.de").write_text(" ".join(["Hund"] * 20_000) + "\n", encoding="utf-8")
    cases["score_target_of_20000_words"] = Case(
        ["seq2seq.score", "--model", model_dir, "--src", base / "one.en", "--tgt", base / "long.de"],
        ["target 1 has 20000 target pieces; the limit is"])
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
    "translate_onnx_damaged_encoder", "translate_onnx_truncated_step", "translate_onnx_with_bf16",
    "translate_weights_is_a_directory", "evaluate_empty_src_and_ref", "evaluate_empty_src", "evaluate_empty_hyp",
    "translate_prefix_of_3000_words", "score_target_of_20000_words",
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
