"""Sequence-level knowledge distillation (``python -m seq2seq.distill``; seq2seq/distillation.py,
seq2seq/distilled_corpus.py): a tiny teacher distils into a tiny student that learns the teacher's outputs, not the
references; an interrupted translation resumes without translating a sentence twice or skipping one (a torn chunk
on disk discarded); a record of other work is refused; the policies for sources left untranslated.

The teacher learns a toy language in 100 steps (adjective noun verb, word for word, in order). The corpus it
distils has the same sources with their references in reversed word order, so the teacher's outputs and the
references disagree on every line: a student that follows the teacher cannot be a student of the references.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import signal
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_OVERRIDES
from support.runs import assert_same_weights

from seq2seq.config import load_config
from seq2seq.distill import main
from seq2seq.distillation import DistillationError, distil_sources, lines_sha256, outputs_file, translate_chunk
from seq2seq.distilled_corpus import write_training_pairs
from seq2seq.model_card import model_card
from seq2seq.translator import Translator

RECIPE = REPO_ROOT / "configs" / "multi30k_en_de.yaml"
STUDENT_RECIPE = REPO_ROOT / "configs" / "distill_student.yaml"
ADJ = {"red": "rot", "blue": "blau", "big": "gross", "old": "alt"}
NOUN = {"dog": "hund", "cat": "katze", "bird": "vogel", "man": "mann", "horse": "pferd", "fish": "fisch"}
VERB = {"runs": "rennt", "sleeps": "schlaeft", "eats": "isst", "sings": "singt"}
#: the toy run: whole words as pieces, a model wide enough to learn the language in 100 steps, no test splits
TOY_RUN = [*TINY_OVERRIDES, "tokenizer.type=bpe", "tokenizer.vocab_size=80", "model.input_feeding=false",
           "model.emb_size=64", "model.encoder_hidden_size=64", "model.decoder_hidden_size=128",
           "train.max_tokens=300", "train.label_smoothing=0", "train.lr=0.01", "train.max_steps=100",
           "train.valid_every=100", "data.test_splits=[]"]


def toy_pairs() -> list[tuple[str, str]]:
    pairs = [(f"{a} {n} {v}", f"{ADJ[a]} {NOUN[n]} {VERB[v]}") for a, n, v in itertools.product(ADJ, NOUN, VERB)]
    random.Random(0).shuffle(pairs)
    return pairs


def write_split(directory: Path, split: str, pairs, reverse: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{split}.en").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    targets = [" ".join(t.split()[::-1]) if reverse else t for _, t in pairs]
    (directory / f"{split}.de").write_text("".join(t + "\n" for t in targets), encoding="utf-8")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(teacher model directory, the corpus to distil (references reversed), cache directory)."""
    from seq2seq.train import train

    root = tmp_path_factory.mktemp("distill")
    pairs = toy_pairs()
    write_split(root / "teacher_corpus", "train", pairs)
    write_split(root / "teacher_corpus", "val", pairs[:16])
    write_split(root / "corpus", "train", pairs, reverse=True)
    write_split(root / "corpus", "val", pairs[:16], reverse=True)
    write_split(root / "corpus", "test_toy", pairs[16:32], reverse=True)
    for lang in ("en", "de"):  # a gzipped split is copied as it is
        path = root / "corpus" / f"test_toy.{lang}"
        import gzip

        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes(), mtime=0))
        path.unlink()
    train(load_config(RECIPE, [f"data.path={root / 'teacher_corpus'}", f"data.cache_dir={root / 'cache'}", *TOY_RUN]),
          root / "teacher")
    return root / "teacher", root / "corpus", root / "cache"


@pytest.fixture(scope="module")
def teacher(toy) -> Translator:
    return Translator.load(toy[0], device="cpu", dtype="fp32")


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def distil_argv(toy, out: Path, *more: str) -> list[str]:
    teacher_dir, corpus, cache = toy
    sets = [a for s in TOY_RUN if not s.startswith("tokenizer.") for a in ("--set", s)]  # the teacher's are taken
    return ["--teachers", str(teacher_dir), "--data", str(corpus), "--out", str(out), "--beam-size", "3",
            "--chunk-size", "40", "--cache-dir", str(cache), "--threads", "1", "--dtype", "fp32", "--device", "cpu",
            "--train-config", str(STUDENT_RECIPE), *sets, "--set", "train.seed=7", *more]


@pytest.fixture(scope="module")
def distilled(toy, tmp_path_factory) -> Path:
    """The command's output directory after one uninterrupted run, the student included."""
    out = tmp_path_factory.mktemp("distilled") / "out"
    assert main(distil_argv(toy, out)) == 0
    return out


def test_a_student_learns_the_teachers_outputs_not_the_references(toy, teacher, distilled, capsys):
    """One command: the teacher's beam-3 outputs become the training targets (exactly what the teacher gives each
    source), validation and test are copied byte for byte, and the student, trained on them with the teacher's
    tokenizers (and their settings in its config.yaml, whatever the recipe says), gives the teacher's output
    greedily on >= 90% of the training sources and the reference on <= 10%.
    The record beside the student names the teacher by its weights' SHA-256, and so does the model card; a rerun
    finds both stages done."""
    teacher_dir, corpus, _ = toy
    out = distilled
    sources, references = lines(corpus / "train.en"), lines(corpus / "train.de")
    expected = teacher.translate(sources, beam_size=3, preserve=False)
    assert lines(out / "train.en") == sources
    assert lines(out / "train.de") == expected
    assert sum(e != r for e, r in zip(expected, references)) >= 0.9 * len(sources)  # the test can tell them apart
    for name in ("val.en", "val.de", "test_toy.en.gz", "test_toy.de.gz"):
        assert (out / name).read_bytes() == (corpus / name).read_bytes()

    student_dir = out / "student"
    for name in ("tokenizer.src.model", "tokenizer.tgt.model"):
        assert (student_dir / name).read_bytes() == (teacher_dir / name).read_bytes()
    assert load_config(student_dir / "config.yaml").tokenizer == load_config(teacher_dir / "config.yaml").tokenizer
    greedy = Translator.load(student_dir, device="cpu", dtype="fp32").translate(sources, beam_size=1, preserve=False)
    follows_teacher = sum(g == e for g, e in zip(greedy, expected)) / len(sources)
    follows_references = sum(g == r for g, r in zip(greedy, references)) / len(sources)
    assert follows_teacher >= 0.9 and follows_references <= 0.1, (follows_teacher, follows_references)

    record = json.loads((student_dir / "distillation.json").read_text(encoding="utf-8"))
    digest = hashlib.sha256((teacher_dir / "model.safetensors").read_bytes()).hexdigest()
    assert [t["weights_sha256"] for t in record["teachers"]] == [digest]
    assert (record["beam_size"], record["with_references"], record["student"]["finished"]) == (3, False, True)
    assert record["training_pairs"]["distilled"] == len(sources)
    card = model_card(student_dir, load_config(student_dir / "config.yaml"), "me/student")
    assert "distilled from" in card and digest[:12] in card

    progress = (out / "distilling" / "progress.json").read_bytes()
    capsys.readouterr()
    assert main(distil_argv(toy, out)) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert (out / "distilling" / "progress.json").read_bytes() == progress  # nothing translated again
    assert main(distil_argv(toy, out, "--with-references")) == 2  # the student's corpus is not rewritten under it
    assert "--with-references" in capsys.readouterr().err


def test_an_ensemble_of_teachers_and_the_union_with_the_references(toy, teacher, tmp_path):
    """``--teachers A,B``: the ensemble translates (two copies of one model: the model's own outputs) and the record
    names both; ``--with-references`` puts the original pairs after the distilled ones; without ``--train-config``
    the command stops after the corpus."""
    teacher_dir, corpus, cache = toy
    out = tmp_path / "distilled"
    assert main(["--teachers", f"{teacher_dir},{teacher_dir}", "--data", str(corpus), "--out", str(out),
                 "--beam-size", "2", "--cache-dir", str(cache), "--dtype", "fp32", "--device", "cpu",
                 "--with-references"]) == 0
    sources, references = lines(corpus / "train.en"), lines(corpus / "train.de")
    assert lines(out / "train.en") == sources + sources
    assert lines(out / "train.de") == teacher.translate(sources, beam_size=2, preserve=False) + references
    record = json.loads((out / "distillation.json").read_text(encoding="utf-8"))
    assert len(record["teachers"]) == 2 and record["with_references"] is True
    assert not (out / "student").exists()


def test_an_interrupted_student_resumes_when_the_command_is_rerun(toy, distilled, tmp_path, monkeypatch, capsys):
    """Ctrl-C in the student's 40th step (a real SIGINT): the command exits 130 saying to rerun it; the rerun
    finds the corpus done and resumes the student, whose weights end equal to the uninterrupted run's."""
    real_step, calls = torch.amp.GradScaler.step, {"n": 0}

    def interrupting_step(self, optimizer, *args, **kwargs):
        result = real_step(self, optimizer, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 40:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    out = tmp_path / "distilled"
    monkeypatch.setattr(torch.amp.GradScaler, "step", interrupting_step)
    assert main(distil_argv(toy, out)) == 130
    monkeypatch.undo()
    assert "rerun the same command" in capsys.readouterr().err
    record = out / "student" / "distillation.json"
    assert json.loads(record.read_text(encoding="utf-8"))["student"]["finished"] is False
    assert main(distil_argv(toy, out)) == 0
    assert json.loads(record.read_text(encoding="utf-8"))["student"]["finished"] is True
    assert_same_weights(out / "student" / "model.safetensors", distilled / "student" / "model.safetensors")


def counting(translator: Translator) -> list[str]:
    """The source lines ``translator.generate`` is called with from now on, in order (the real method runs)."""
    seen, real = [], translator.generate

    def generate(texts, **kwargs):
        seen.extend(texts)
        return real(texts, **kwargs)

    translator.generate = generate
    return seen


def test_an_interrupted_distillation_resumes_without_repeating_or_skipping_a_sentence(teacher, tmp_path):
    """Interrupted (Ctrl-C) after 3 recorded chunks of 10, then a torn 4th chunk left on disk (a whole line and
    half of one, as a kill in the middle of a write leaves it): the rerun discards the torn bytes and translates
    exactly the sources from the 31st on, once each, and its outputs equal an uninterrupted run's byte for byte."""
    sources = [s for s, _ in toy_pairs()]
    identity = {"sources": len(sources), "sources_sha256": lines_sha256(sources), "beam_size": 3}
    settings = dict(tgt_lang="de", beam_size=3, chunk_size=10, show_progress=False)
    seen = counting(teacher)
    try:
        distil_sources(teacher, sources, tmp_path / "whole", identity, **settings)
        assert seen == sources
        whole = outputs_file(tmp_path / "whole", "de").read_bytes()
        assert whole.count(b"\n") == len(sources)

        seen.clear()

        def interrupt(progress):
            if progress.chunks == 3:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            distil_sources(teacher, sources, tmp_path / "cut", identity, after_chunk=interrupt, **settings)
        assert seen == sources[:30]
        with open(outputs_file(tmp_path / "cut", "de"), "ab") as torn:
            torn.write("rot hund rennt\nblau kat".encode("utf-8"))
        seen.clear()
        progress = distil_sources(teacher, sources, tmp_path / "cut", identity, **settings)
        assert seen == sources[30:]
        assert outputs_file(tmp_path / "cut", "de").read_bytes() == whole
        assert (progress.lines, progress.chunks, progress.translated, progress.finished) == (96, 10, 96, True)
    finally:
        del teacher.generate  # the real method again


def test_a_record_of_other_work_is_refused(teacher, tmp_path):
    """Outputs of other sources or another beam size are never continued, nor outputs shorter than recorded."""
    sources = [s for s, _ in toy_pairs()][:20]
    identity = {"sources": len(sources), "sources_sha256": lines_sha256(sources), "beam_size": 3}
    settings = dict(tgt_lang="de", beam_size=3, chunk_size=10, show_progress=False)
    distil_sources(teacher, sources, tmp_path, identity, **settings)
    with pytest.raises(DistillationError, match="beam_size = 3.*but this one has 4"):
        distil_sources(teacher, sources, tmp_path, {**identity, "beam_size": 4}, **settings)
    path = outputs_file(tmp_path, "de")
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DistillationError, match="cut or replaced"):
        distil_sources(teacher, sources, tmp_path, identity, **settings)


def test_sources_too_long_for_the_teacher_are_not_translated(toy, tmp_path):
    """A source over the teacher's decode.max_src_length pieces is never given to the model (it would read only
    its start): its output line is empty, and it is counted."""
    translator = Translator.load(toy[0], device="cpu", dtype="fp32")
    translator.cfg.decode.max_src_length = 3
    seen = counting(translator)
    outputs, counts = translate_chunk(translator, ["red dog runs", "red dog runs red dog"], beam_size=3,
                                      batch_size=None)
    assert seen == ["red dog runs"]
    assert outputs[0] and outputs[1] == ""
    assert counts == {"translated": 1, "empty": 0, "too_long": 1}


@pytest.mark.parametrize("on_empty, with_references, src, tgt", [
    ("reference", False, ["a", "b", "c"], ["x", "B", "z"]),
    ("drop", False, ["a", "c"], ["x", "z"]),
    ("reference", True, ["a", "c", "a", "b", "c"], ["x", "z", "A", "B", "C"]),
    ("drop", True, ["a", "c", "a", "b", "c"], ["x", "z", "A", "B", "C"]),
])
def test_training_pairs_keep_or_drop_sources_without_a_translation(tmp_path, on_empty, with_references, src, tgt):
    """The written pairs, by hand: the teachers' output where there is one; the reference or nothing where there
    is none; the original pairs after the distilled ones with ``with_references``."""
    counts = write_training_pairs(["a", "b", "c"], ["A", "B", "C"], ["x", "", "z"], tmp_path, "en", "de",
                                  on_empty=on_empty, with_references=with_references)
    assert (lines(tmp_path / "train.en"), lines(tmp_path / "train.de")) == (src, tgt)
    assert counts["training_pairs"] == len(src) and counts["distilled"] == 2
    assert (counts["kept_references"], counts["dropped"]) == ((1, 0) if on_empty == "reference" else (0, 1))
    with pytest.raises(ValueError, match="one per source"):
        write_training_pairs(["a", "b"], ["A", "B"], ["x"], tmp_path, "en", "de")


def test_command_line_errors_name_the_flag(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    write_split(corpus, "train", toy_pairs()[:4])
    for argv, flag in (
        (["--teachers", str(tmp_path / "nowhere"), "--data", str(corpus), "--out", str(tmp_path / "o")],
         "--teachers"),
        (["--teachers", "x", "--data", str(corpus), "--out", str(tmp_path / "o"), "--chunk-size", "0"],
         "--chunk-size"),
        (["--teachers", "x", "--data", str(corpus), "--out", str(corpus)], "--out"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert flag in capsys.readouterr().err
