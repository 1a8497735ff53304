"""The command lines (``python -m seq2seq.translate`` / ``seq2seq.evaluate``, scripts/train_translator.sh),
run as subprocesses against the real tiny model of ``tiny_model_dir``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TINY_OVERRIDES
from support.cli import ENV, SENTENCES, output_lines, run

from seq2seq.translator import Translator
from seq2seq.metrics import bleu_and_chrf

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BLEU_SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:"


@pytest.fixture(scope="module")
def translator(tiny_model_dir) -> Translator:
    return Translator.load(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def test_files(tiny_corpus, tmp_path_factory) -> tuple[Path, Path]:
    """The first 10 pairs of the tiny test split, as plain source and reference files."""
    out = tmp_path_factory.mktemp("eval_files")
    for lang in ("en", "de"):
        lines = (tiny_corpus / f"test_2016_flickr.{lang}").read_text(encoding="utf-8").splitlines()[:10]
        (out / f"test.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out / "test.en", out / "test.de"


# ---------------------------------------------------------------------------- python -m seq2seq.translate
def test_translate_arguments_print_one_line_each_equal_to_the_api(tiny_model_dir, translator):
    lines = output_lines(run("seq2seq.translate", "--model", str(tiny_model_dir), *SENTENCES))
    assert lines == translator.translate(SENTENCES)


@pytest.mark.parametrize("dtype", ["bf16", "auto"])
def test_translate_equals_the_api_under_each_compute_dtype(tiny_model_dir, dtype):
    """Same machine, same dtype (auto: the choice cached in the model's data.cache_dir), one thread each: the
    command line and the API give identical text and scores (exact: the same computation)."""
    api = Translator.load(tiny_model_dir, device="cpu", dtype=dtype)
    lines = output_lines(run("seq2seq.translate", "--model", str(tiny_model_dir), "--device", "cpu", "--dtype", dtype,
                             "--nbest", "2", "--beam-size", "3", *SENTENCES))
    expected = [f"{h.score:.4f}\t{h.text}" for entry in api.generate(SENTENCES, beam_size=3, nbest=2) for h in entry]
    assert lines == expected


def test_translate_streams_stdin_line_by_line(tiny_model_dir, translator):
    inputs = [SENTENCES[0], "", SENTENCES[1], "   ", "People.", SENTENCES[2]]
    lines = output_lines(run("seq2seq.translate", "--model", str(tiny_model_dir),
                             stdin="".join(line + "\n" for line in inputs)))
    assert len(lines) == len(inputs)
    assert lines[1] == "" and lines[3] == ""
    assert lines == translator.translate(inputs)


def test_translate_nbest_prints_score_tab_text(tiny_model_dir, translator):
    lines = output_lines(run("seq2seq.translate", "--model", str(tiny_model_dir), "--nbest", "2", "--beam-size", "3",
                             *SENTENCES[:2]))
    assert len(lines) == 4
    expected = [f"{t.score:.4f}\t{t.text}" for entry in translator.generate(SENTENCES[:2], beam_size=3, nbest=2)
                for t in entry]
    assert lines == expected
    for first, second in (lines[0:2], lines[2:4]):
        assert float(first.split("\t")[0]) >= float(second.split("\t")[0])


def test_translate_json_lines(tiny_model_dir, translator):
    lines = output_lines(run("seq2seq.translate", "--model", str(tiny_model_dir), "--json", *SENTENCES))
    assert len(lines) == len(SENTENCES)
    records = [json.loads(line) for line in lines]
    expected = [entry[0] for entry in translator.generate(SENTENCES)]
    for record, t in zip(records, expected):
        assert [h["text"] for h in record["translations"]] == [t.text]
        assert record["translations"][0]["score"] == pytest.approx(t.score, abs=1e-3)


def test_translate_plots_attention(tiny_model_dir, tmp_path):
    result = run("seq2seq.translate", "--model", str(tiny_model_dir), "--plot-attention", "attention.png",
                 *SENTENCES[:2], cwd=tmp_path)
    assert len(output_lines(result)) == 2
    assert (tmp_path / "attention.png").read_bytes()[:8] == PNG_MAGIC


def test_translate_without_a_model_explains_how_to_train(tmp_path):
    result = run("seq2seq.translate", "a dog", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "train_translator.sh" in result.stderr and "--model" in result.stderr
    assert "Traceback" not in result.stderr


def test_translate_defaults_to_the_model_under_runs_and_prints_one_line(tiny_model_dir, translator, tmp_path):
    """Without --model: the newest model under runs/, named on stderr. --model DIR/model.safetensors is DIR."""
    shutil.copytree(tiny_model_dir, tmp_path / "runs" / "tiny")
    result = run("seq2seq.translate", "a man is riding a bike", cwd=tmp_path)
    assert output_lines(result) == [translator.translate("a man is riding a bike")]
    assert "using the most recently trained model, runs/tiny (choose another with --model DIR)" in result.stderr
    result = run("seq2seq.translate", "--model", str(tmp_path / "runs" / "tiny" / "model.safetensors"), "a dog")
    assert output_lines(result) == [translator.translate("a dog")] and "most recently" not in result.stderr


# ---------------------------------------------------------------------------- python -m seq2seq.evaluate
def test_evaluate_a_model_prints_bleu_and_signature(tiny_model_dir, test_files):
    src, ref = test_files
    result = run("seq2seq.evaluate", "--model", str(tiny_model_dir), "--src", str(src), "--ref", str(ref),
                 "--beam-size", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BLEU = " in result.stdout
    assert BLEU_SIGNATURE in result.stdout
    assert "/10 [" in result.stderr  # the progress bar (tqdm), on stderr


def test_evaluate_json_matches_scoring_the_api_output(tiny_model_dir, translator, test_files, tmp_path):
    src, ref = test_files
    hyp_file = tmp_path / "hyp.de"
    result = run("seq2seq.evaluate", "--model", str(tiny_model_dir), "--src", str(src), "--ref", str(ref),
                 "--beam-size", "2", "--json", "--out", str(hyp_file), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "/10 [" not in result.stderr
    report = json.loads(result.stdout)
    hypotheses = translator.translate(src.read_text(encoding="utf-8").splitlines(), beam_size=2)
    assert hyp_file.read_text(encoding="utf-8").split("\n")[:-1] == hypotheses
    expected = bleu_and_chrf(hypotheses, ref.read_text(encoding="utf-8").splitlines())
    assert report["bleu"] == expected["bleu"] and report["chrf"] == expected["chrf"]
    assert report["bleu_signature"].startswith(BLEU_SIGNATURE)
    assert report["sentences"] == 10 and report["beam_size"] == 2


def test_evaluate_scores_existing_output(test_files):
    _, ref = test_files
    result = run("seq2seq.evaluate", "--hyp", str(ref), "--ref", str(ref), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bleu"] == 100.0 and report["chrf"] == 100.0
    assert report["bleu_signature"].startswith(BLEU_SIGNATURE)


def test_evaluate_mismatched_line_counts_name_both_files(tiny_model_dir, test_files, tmp_path):
    src, ref = test_files
    short = tmp_path / "short.de"
    nine = ref.read_text(encoding="utf-8").splitlines()[:9]
    short.write_text("".join(line + "\n" for line in nine), encoding="utf-8")
    for args in (["--hyp", str(short), "--ref", str(ref)],
                 ["--model", str(tiny_model_dir), "--src", str(src), "--ref", str(short)]):
        result = run("seq2seq.evaluate", *args)
        assert result.returncode == 2
        assert str(short) in result.stderr and (str(ref) in result.stderr or str(src) in result.stderr)
        assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- scripts/train_translator.sh
def test_train_translator_script_trains_and_translates(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    sets = [arg for override in [*TINY_OVERRIDES, f"data.cache_dir={tmp_path / 'cache'}",
                                 "train.valid_bleu_sentences=10"]
            for arg in ("--set", override)]
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "train_translator.sh"), "--data", str(tiny_corpus), "--max-steps", "5",
         *sets],
        cwd=tmp_path, capture_output=True, text=True, encoding="utf-8", timeout=300,
        env={**ENV, "OUT": str(out), "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout[:-1].split("\n")
    assert lines[-2].startswith("Sample translation")
    assert lines[-1] == Translator.load(out, device="cpu").translate("A man is riding a bike.")
    assert (out / "results.json").is_file() and (out / "curves.png").is_file()


def test_translate_refuses_an_empty_constraint_and_too_many_samples(tiny_model_dir):
    """Issue 21 item 10: a blank --constraints phrase, and --sampling --nbest above the most samples, exit 2 with
    one line naming the flag (the blank phrase used to end in a traceback)."""
    for args, flag in ((["--constraints", " ", "a dog runs"], "--constraints"),
                       (["--sampling", "--nbest", "101", "a dog"], "--nbest")):
        result = run("seq2seq.translate", "--model", str(tiny_model_dir), "--device", "cpu", *args)
        assert result.returncode == 2, result.stderr
        assert flag in result.stderr and "Traceback" not in result.stderr, result.stderr
