"""Smaller command-line options: --threads (translate, evaluate, Translator.load) and the progress bar."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from support.cli import ENV, SENTENCES, run

from seq2seq.translator import Translator


@pytest.fixture
def restore_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_translator_load_sets_the_threads(tiny_model_dir, restore_threads):
    torch.set_num_threads(1)
    Translator.load(tiny_model_dir, device="cpu", threads=2)
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="threads must be >= 1"):
        Translator.load(tiny_model_dir, device="cpu", threads=0)


def test_translate_and_evaluate_threads_flags(tiny_model_dir, tiny_corpus, restore_threads, capsys):
    from seq2seq.evaluate import main as evaluate
    from seq2seq.translate import main as translate

    torch.set_num_threads(1)
    assert translate(["--model", str(tiny_model_dir), "--device", "cpu", "--threads", "2", "a dog"]) == 0
    assert torch.get_num_threads() == 2
    src, ref = tiny_corpus / "test_2016_flickr.en", tiny_corpus / "test_2016_flickr.de"
    assert evaluate(["--model", str(tiny_model_dir), "--device", "cpu", "--threads", "1", "--beam-size", "1",
                     "--src", str(src), "--ref", str(ref)]) == 0
    assert torch.get_num_threads() == 1
    for main in (translate, evaluate):
        with pytest.raises(SystemExit) as exit_info:
            main(["--model", str(tiny_model_dir), "--threads", "0", "--src", str(src), "--ref", str(ref)]
                 if main is evaluate else ["--model", str(tiny_model_dir), "--threads", "0", "a dog"])
        assert exit_info.value.code == 2
        assert "--threads must be >= 1" in capsys.readouterr().err


def test_progress_bar_on_stderr_for_a_file_only(tiny_model_dir, tmp_path):
    path = tmp_path / "input.en"
    lines = SENTENCES * 4  # 12 lines
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    args = [sys.executable, "-m", "seq2seq.translate", "--model", str(tiny_model_dir), "--device", "cpu"]
    with open(path, "rb") as stdin:
        from_file = subprocess.run(args, check=False, stdin=stdin, capture_output=True, text=True, timeout=180, env=ENV)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.count("\n") == 12
    assert "12/12" in from_file.stderr and "100%" in from_file.stderr, from_file.stderr  # total counted ahead
    with open(path, "rb") as stdin:
        quiet = subprocess.run([*args, "--no-progress"], check=False, stdin=stdin, capture_output=True, text=True, timeout=180,
                               env=ENV)
    assert quiet.stdout == from_file.stdout and "12/12" not in quiet.stderr
    piped = run("seq2seq.translate", "--model", str(tiny_model_dir), "--device", "cpu", stdin=path.read_text())
    assert piped.stdout == from_file.stdout and "12/12" not in piped.stderr and "%" not in piped.stderr
