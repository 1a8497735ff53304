"""docs/data.md's walk-through runs as written: its bash blocks (a user's own two text files -> a trained,
evaluated, served model; a TSV file through scripts/train_translator.sh; fine-tuning with --init-from) in a
directory holding small files, with a ``python`` on PATH that adds the tiny recipe and a few steps to every
``python -m seq2seq.train`` (so the documented commands themselves are what runs)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, SUBPROCESS_ENV, TINY_OVERRIDES

from seq2seq.translator import Translator

DOC = REPO_ROOT / "docs" / "data.md"
SECTIONS = ("## Your own corpus, from text files to a served model", "## Fine-tuning on new data")
BASH = re.compile(r"^```bash\n(.*?)^```$", re.S | re.M)


def walkthrough_blocks(text: str) -> list[str]:
    """The bash blocks of :data:`SECTIONS`, in document order (a section ends at the next ``## `` heading)."""
    blocks = []
    for heading in SECTIONS:
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        blocks += BASH.findall(section)
    return blocks


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_walkthrough_blocks_are_found():
    blocks = walkthrough_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 7 and "seq2seq.serve" in blocks[4] and "--init-from" in blocks[6]


def test_the_held_out_split_is_a_seeded_tenth_saved_beside_the_run(tmp_path):
    """At most a tenth (here 10 of 100 pairs, below data.held_out_pairs), drawn with train.seed: the same rows
    again for the same seed, others for another; held out and training pairs are disjoint and cover the corpus."""
    import datasets

    from seq2seq.config import load_config
    from seq2seq.training.prepare import hold_out

    raw = datasets.Dataset.from_dict({"src": [f"s{i}" for i in range(100)], "tgt": [f"t{i}" for i in range(100)]})
    cfg = load_config(overrides=["data.tgt_lang=fr"])

    def split(seed: int, out: Path):
        cfg.train.seed = seed
        out.mkdir()
        train, valid, description = hold_out(raw, cfg, out, "no val")
        return list(train["src"]), list(valid["src"]), description

    train, valid, description = split(1, tmp_path / "a")
    assert len(valid) == 10 and sorted(train + valid, key=lambda s: int(s[1:])) == list(raw["src"])
    assert description == {"pairs": 10, "of": 100, "seed": 1, "files": ["held_out.en", "held_out.fr"], "why": "no val"}
    assert (tmp_path / "a" / "held_out.fr").read_text(encoding="utf-8").split() == ["t" + s[1:] for s in valid]
    assert split(1, tmp_path / "b")[1] == valid and split(2, tmp_path / "c")[1] != valid


@pytest.mark.slow  # three short trainings, an evaluation, two translations and a server, each its own process
def test_the_own_corpus_walkthrough_runs_as_written(tiny_corpus, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for name in ("configs", "scripts", "seq2seq"):
        (work / name).symlink_to(REPO_ROOT / name)
    en = (tiny_corpus / "train.en").read_text(encoding="utf-8").splitlines()
    other = (tiny_corpus / "train.de").read_text(encoding="utf-8").splitlines()  # "fr" here: any Latin-script text
    write_lines(work / "my_corpus" / "train.en", en[:1500])
    write_lines(work / "my_corpus" / "train.fr", other[:1500])
    write_lines(work / "my_corpus" / "test.en", en[1500:1550])
    write_lines(work / "my_corpus" / "test.fr", other[1500:1550])
    for split, rows in (("train", slice(1550, 1900)), ("val", slice(1900, 1950))):
        write_lines(work / "my_new_domain" / f"{split}.en", en[rows])
        write_lines(work / "my_new_domain" / f"{split}.fr", other[rows])
    tiny = [*TINY_OVERRIDES, f"data.cache_dir={tmp_path / 'cache'}", "train.valid_bleu_sentences=10",
            "train.valid_every=4"]
    shim = tmp_path / "bin" / "python"
    shim.parent.mkdir()
    shim.write_text("#!/usr/bin/env bash\n"
                    'if [ "${1:-} ${2:-}" = "-m seq2seq.train" ]; then\n'
                    f'  exec {sys.executable} "$@" --max-steps 4 --max-minutes 0 '
                    + " ".join(f"--set '{o}'" for o in tiny) + "\nfi\n"
                    f'exec {sys.executable} "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    env = {**SUBPROCESS_ENV, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("OUT", None)
    port = str(free_port())
    outputs = []
    for number, block in enumerate(walkthrough_blocks(DOC.read_text(encoding="utf-8")), 1):
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.replace("8000", port)], cwd=work, env=env,
                              capture_output=True, text=True, encoding="utf-8", timeout=300)
        assert done.returncode == 0, f"block {number} of {DOC}:\n{block}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)

    run = work / "runs" / "my_corpus_en_fr"
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert list(results) == ["test"]  # the user's test split, under its own name
    report = json.loads((run / "cleaning.json").read_text(encoding="utf-8"))
    assert report["held_out"]["pairs"] == 150 and report["pairs_read"] == 1350  # a tenth of 1,500 held out
    assert len((run / "held_out.fr").read_text(encoding="utf-8").splitlines()) == 150
    translator = Translator.load(run, device="cpu")
    sample = translator.translate("A man is riding a bike.")
    assert "BLEU" in outputs[2]
    assert outputs[3].splitlines()[0] == sample
    assert len((work / "test.hyp.fr").read_text(encoding="utf-8").splitlines()) == 50
    assert json.loads(outputs[4].splitlines()[-1])["translations"][0]["text"] == sample  # after uvicorn's log
    tsv_run = work / "runs" / "pairs_en_fr"
    assert outputs[5].rstrip("\n").splitlines()[-1] == Translator.load(tsv_run, device="cpu").translate(
        "A man is riding a bike.")
    fine_tuned = work / "runs" / "my_new_domain_en_fr"
    saved = (fine_tuned / "config.yaml").read_text(encoding="utf-8")
    assert "init_from: runs/my_corpus_en_fr" in saved
    assert (fine_tuned / "tokenizer.src.model").read_bytes() == (run / "tokenizer.src.model").read_bytes()
