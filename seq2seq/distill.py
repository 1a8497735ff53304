"""Sequence-level knowledge distillation as one command (docs/distillation.md):

    python -m seq2seq.distill --teachers runs/a,runs/b --data ../shared/data/multi30k --out runs/distilled \\
        --train-config configs/distill_student.yaml

Stage 1: the teachers (one model, or several as an ensemble) translate the training sources with beam search
(:mod:`seq2seq.distillation`, resumable chunk by chunk) into ``OUT``, a corpus directory the trainer reads: the
distilled ``train.{src}`` / ``train.{tgt}`` (``--with-references``: the original pairs too), the validation and
test splits copied unchanged (:mod:`seq2seq.distilled_corpus`), and ``OUT/distillation.json``, what was done
(teachers and the SHA-256 of their weights, beam size, counts, time).

Stage 2, with ``--train-config``: the student trained on ``OUT`` with ``seq2seq.train`` into ``--student`` (default
``OUT/student``), with the teachers' tokenizers (the student can be compared or ensembled with them), and the
distillation's record copied beside it (``distillation.json``; the model card names the teachers).

Rerun the same command after any interruption: a finished stage is skipped, stage 1 continues after its last
recorded chunk, stage 2 with the trainer's ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from seq2seq.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, atomic_write_text, find_training_state
from seq2seq.command_line import add_decoding_arguments, check_decoding_arguments
from seq2seq.config import Config, ConfigError, DataConfig, load_config
from seq2seq.data import DataError
from seq2seq.model_card import DISTILLATION_FILE
from seq2seq.distillation import (DistillationError, distil_sources, file_sha256, lines_sha256, load_progress,
                                  outputs_file)
from seq2seq.distilled_corpus import ON_EMPTY, copy_reference_splits, read_outputs, training_pairs, write_training_pairs
from seq2seq.tokenizer import SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE, TokenizerError
from seq2seq.training import TrainingError

logger = logging.getLogger("seq2seq.distill")

#: the record of a distillation, in OUT and beside the student
RECORD_FILE = DISTILLATION_FILE
#: stage 1's work in progress (the teachers' outputs and progress.json), inside OUT
WORK_DIR = "distilling"
USER_ERRORS = (ConfigError, DataError, TokenizerError, CheckpointError, TrainingError, DistillationError, ValueError,
               OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.distill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", action="append", required=True, metavar="DIR[,DIR...]",
                        help="teacher model directories or hf:ORG/NAME (several: an ensemble sharing its tokenizers)")
    parser.add_argument("--data", required=True, help="the corpus, as train --data takes it: a directory of "
                        "{split}.{lang}[.gz] files, a TSV file, or a Hugging Face dataset name")
    parser.add_argument("--out", required=True, help="the distilled corpus directory (stage 1's work and record too)")
    parser.add_argument("--src-lang", help="source language (default: the teachers')")
    parser.add_argument("--tgt-lang", help="target language (default: the teachers')")
    parser.add_argument("--cache-dir", help="where corpora read are cached (data.cache_dir; default ~/.cache/seq2seq)")
    distil = parser.add_argument_group("stage 1: the teachers' translations")
    distil.add_argument("--beam-size", type=int, default=5, help="the teachers' beam size (default 5)")
    distil.add_argument("--chunk-size", type=int, default=2000,
                        help="source lines translated and recorded at a time: at most this much work is redone after "
                             "an interruption (default 2000)")
    distil.add_argument("--on-empty", choices=ON_EMPTY, default="reference",
                        help="a source the teachers leave untranslated (an empty output, or longer than their "
                             "decode.max_src_length): keep its reference (default) or drop the pair")
    distil.add_argument("--with-references", action="store_true",
                        help="train on the original pairs as well as the distilled ones (the union)")
    add_decoding_arguments(parser, batch_size=True, beam_size=False)
    student = parser.add_argument_group("stage 2: the student (seq2seq.train)")
    student.add_argument("--train-config", metavar="FILE", help="the student's training config (e.g. "
                         "configs/distill_student.yaml); without it the command stops after stage 1")
    student.add_argument("--student", metavar="DIR", help="the student's run directory (default OUT/student)")
    student.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="override a key of the student's config (repeatable)")
    student.add_argument("--max-minutes", type=float, help="the student's time budget (train.max_minutes)")
    student.add_argument("--max-steps", type=int, help="the student's step budget (train.max_steps)")
    return parser


def teacher_dirs(parser: argparse.ArgumentParser, references: list[str]) -> list[tuple[str, Path]]:
    """(reference as given, local model directory) per teacher; ``parser.error`` naming one that is no model."""
    from seq2seq.checkpoint import model_dir_location
    from seq2seq.hub import resolve_model_dir

    found = []
    for reference in [r.strip() for given in references for r in given.split(",") if r.strip()]:
        try:
            directory = model_dir_location(resolve_model_dir(reference))
        except (CheckpointError, OSError, ValueError) as err:
            parser.error(f"--teachers {reference}: {err}")
        missing = [name for name in (CONFIG_FILE, SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE, WEIGHTS_FILE)
                   if not (directory / name).is_file()]
        if missing:
            parser.error(f"--teachers {reference}: {directory} is not a trained model directory (no "
                         f"{', '.join(missing)}); give the --out of a finished training run")
        found.append((reference, directory.resolve()))
    if not found:
        parser.error("--teachers: give at least one model directory")
    return found


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    check_decoding_arguments(parser, args)
    if args.chunk_size < 1:
        parser.error(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if Path(args.out).resolve() == Path(args.data).expanduser().resolve():
        parser.error("--out must not be the --data directory: the distilled corpus is written beside it")
    if args.train_config and not Path(args.train_config).is_file():
        parser.error(f"--train-config {args.train_config}: file not found (e.g. configs/distill_student.yaml)")


def distil(args: argparse.Namespace, teachers: list[tuple[str, Path]], data_cfg: DataConfig) -> dict:
    """Stage 1 (translation resumed where it stopped, or skipped when finished); the record written to
    ``OUT/distillation.json``."""
    out, work = Path(args.out), Path(args.out) / WORK_DIR
    sources, references = training_pairs(data_cfg)
    identity = {"sources": len(sources), "sources_sha256": lines_sha256(sources),
                "teachers_sha256": [file_sha256(directory / WEIGHTS_FILE) for _, directory in teachers],
                "beam_size": args.beam_size}
    progress = load_progress(work, identity)
    if not progress.finished:
        from seq2seq.translator import Translator

        translator = Translator.load([str(d) for _, d in teachers], device=args.device, dtype=args.dtype,
                                     threads=args.threads)
        logger.info("distilling %d training sources of %s with %s (beam %d, %s)", len(sources), args.data,
                    " + ".join(ref for ref, _ in teachers), args.beam_size, translator.autocast_dtype or "fp32")
        progress = distil_sources(translator, sources, work, identity, tgt_lang=data_cfg.tgt_lang,
                                  beam_size=args.beam_size, batch_size=args.batch_size, chunk_size=args.chunk_size)
    settings = {"on_empty": args.on_empty, "with_references": args.with_references}
    record_path = out / RECORD_FILE
    old = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    if old.get("identity") == identity and all(old.get(k) == v for k, v in settings.items()):
        logger.info("the distilled corpus in %s is complete (%s)", out, record_path)
        return old
    outputs = read_outputs(outputs_file(work, data_cfg.tgt_lang))
    copied = copy_reference_splits(data_cfg, out)
    counts = write_training_pairs(sources, references, outputs, out, data_cfg.src_lang, data_cfg.tgt_lang, **settings)
    logger.info("teachers' outputs: %d translated (%d of them empty), %d sources too long for the teachers; for "
                "those without a translation: %d references kept, %d pairs dropped (--on-empty %s); %d training pairs "
                "in %s (with the references: %s); copied unchanged: %s", progress.translated, progress.empty,
                progress.too_long, counts["kept_references"], counts["dropped"], args.on_empty,
                counts["training_pairs"], out, "yes" if args.with_references else "no", ", ".join(copied) or "nothing")
    record = {
        "teachers": [{"model": ref, "directory": str(d), "weights_sha256": sha}
                     for (ref, d), sha in zip(teachers, identity["teachers_sha256"])],
        "corpus": {"data": args.data, "src_lang": data_cfg.src_lang, "tgt_lang": data_cfg.tgt_lang,
                   "train_split": data_cfg.train_split, "copied_splits": copied},
        "beam_size": args.beam_size, **settings,
        "outputs": {"translated": progress.translated, "empty": progress.empty, "too_long": progress.too_long},
        "training_pairs": counts,
        "translation_seconds": round(progress.seconds, 1),
        "sentences_per_second": round(progress.translated / progress.seconds, 1) if progress.seconds else None,
        "identity": identity,
    }
    atomic_write_text(record_path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return record


def student_config(args: argparse.Namespace, teacher_cfg: Config, data_cfg: DataConfig) -> Config:
    """The student's config: ``--train-config`` and ``--set``, on the distilled corpus, with the teachers'
    tokenizer settings (their tokenizers are the student's)."""
    overrides = [*args.overrides, f"data.path={Path(args.out).resolve()}", f"data.src_lang={data_cfg.src_lang}",
                 f"data.tgt_lang={data_cfg.tgt_lang}"]
    for flag, key in (("max_minutes", "train.max_minutes"), ("max_steps", "train.max_steps"),
                      ("cache_dir", "data.cache_dir")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.device != "auto":
        overrides.append(f"train.device={args.device}")
    cfg = load_config(args.train_config, overrides)
    for key, value in teacher_cfg.tokenizer.training_settings().items():
        if getattr(cfg.tokenizer, key) != value:
            print(f"note: the student's config says tokenizer.{key} = {getattr(cfg.tokenizer, key)!r}; the teachers' "
                  f"{value!r} applies (the student takes the teachers' tokenizers)", file=sys.stderr)
        setattr(cfg.tokenizer, key, value)
    return cfg.validate()


def student_dir(args: argparse.Namespace) -> Path:
    return Path(args.student or Path(args.out) / "student")


def student_record(args: argparse.Namespace) -> dict:
    """The distillation record beside the student ({} before stage 2 starts); DistillationError when the student
    trains on a corpus made with other --on-empty / --with-references (rewriting it would change its data)."""
    path = student_dir(args) / RECORD_FILE
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for key, flag in (("on_empty", "--on-empty"), ("with_references", "--with-references")):
        if previous and previous.get(key) != getattr(args, key):
            raise DistillationError(f"the student in {path.parent} trains on a corpus made with {key} = "
                                    f"{previous.get(key)!r} ({path}), this command asks for {getattr(args, key)!r}: "
                                    f"keep {flag} as it was, or give another --out and --student")
    return previous


def train_student(args: argparse.Namespace, teachers: list[tuple[str, Path]], data_cfg: DataConfig,
                  record: dict, previous: dict) -> int:
    """Stage 2: train (or resume, or find finished) the student; its exit status."""
    from seq2seq.train import train

    student = student_dir(args)
    record_path = student / RECORD_FILE
    if previous.get("student", {}).get("finished"):
        print(f"the student in {student} is trained ({record_path}); nothing to do", file=sys.stderr)
        return 0
    if previous and previous.get("identity") != record["identity"]:
        raise DistillationError(f"{student} holds a student of another distillation ({record_path}); choose another "
                                "--student or delete it")
    cfg = student_config(args, load_config(teachers[0][1] / CONFIG_FILE), data_cfg)
    resume = find_training_state(student) is not None
    if resume and not previous:
        raise DistillationError(f"{student} holds a training run that is not a student of this distillation (no "
                                f"{RECORD_FILE}); choose another --student")
    if not resume:
        student.mkdir(parents=True, exist_ok=True)
        for name in (SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE):
            shutil.copyfile(teachers[0][1] / name, student / name)
    provenance = {**record, "corpus_dir": str(Path(args.out).resolve()),
                  "student": {"train_config": args.train_config, "overrides": args.overrides, "finished": False,
                              "started": previous.get("student", {}).get("started", round(time.time()))}}
    atomic_write_text(record_path, json.dumps(provenance, indent=1, ensure_ascii=False) + "\n")
    summary = train(cfg, student, resume=resume)
    if summary.get("interrupted"):
        print(f"interrupted: rerun the same command to continue training the student in {student}", file=sys.stderr)
        return 130
    provenance["student"].update(finished=True, best_bleu=summary.get("best_bleu"), steps=summary.get("step"))
    atomic_write_text(record_path, json.dumps(provenance, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({"student": str(student), "best_bleu": summary.get("best_bleu"), "step": summary.get("step")}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    teachers = teacher_dirs(parser, args.teachers)
    try:
        teacher_cfg = load_config(teachers[0][1] / CONFIG_FILE)
        data_cfg = DataConfig(path=args.data, src_lang=args.src_lang or teacher_cfg.data.src_lang,
                              tgt_lang=args.tgt_lang or teacher_cfg.data.tgt_lang,
                              **({"cache_dir": args.cache_dir} if args.cache_dir else {}))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        previous = student_record(args)
        from seq2seq.training.run import run_logging

        with run_logging(Path(args.out) / "distill.log"):
            record = distil(args, teachers, data_cfg)
        if not args.train_config:
            print(f"distilled corpus written to {args.out}; train the student with the same command and "
                  "--train-config configs/distill_student.yaml", file=sys.stderr)
            return 0
        return train_student(args, teachers, data_cfg, record, previous)
    except KeyboardInterrupt:
        print(f"interrupted: rerun the same command to continue (stage 1 keeps every chunk recorded in "
              f"{Path(args.out) / WORK_DIR})", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
