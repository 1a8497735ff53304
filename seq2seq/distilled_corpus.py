"""The corpus a distillation writes (``python -m seq2seq.distill``, docs/distillation.md): a directory the trainer
reads like any ``{split}.{lang}`` corpus.

- ``train.{src}`` / ``train.{tgt}``: the training sources with the teachers' outputs as targets
  (:func:`write_training_pairs`); a source the teachers left without a translation (an empty output, or a source
  too long for them) keeps its reference (``on_empty="reference"``) or is dropped (``"drop"``); with
  ``with_references`` the original pairs follow the distilled ones (the union; the trainer's duplicate filter then
  keeps one copy of a pair where the teachers' output is the reference);
- the validation and test splits copied unchanged from the original corpus (:func:`copy_reference_splits`): the
  student is validated and tested against the references.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Sequence

from seq2seq.checkpoint import atomic_write
from seq2seq.config import DataConfig
from seq2seq.data import SplitNotFound, read_split, test_split_names

logger = logging.getLogger("seq2seq.distill")

#: what becomes of a source the teachers left without a translation
ON_EMPTY = ("reference", "drop")


class SourceLines:
    """One column of a (memory-mapped) dataset as a sequence of lines: ``len()``, ``[i]`` and ``[a:b]`` (a list)."""

    def __init__(self, dataset, column: str) -> None:
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self.dataset[index][self.column])
        return self.dataset[index][self.column]


def training_pairs(cfg: DataConfig):
    """(sources, references) of the corpus's training split, as :class:`SourceLines` (pairs with an empty side
    dropped, as the trainer reads them)."""
    train = read_split(cfg, cfg.train_split)
    return SourceLines(train, "src"), SourceLines(train, "tgt")


def copy_reference_splits(cfg: DataConfig, out_dir: Path) -> list[str]:
    """Copy every split but the training one into ``out_dir`` unchanged: the files of a ``{split}.{lang}``
    directory byte for byte; a hub dataset's validation and test splits written as ``{split}.{lang}`` text. Returns
    the splits copied (a TSV corpus has none: the student then holds out distilled pairs for validation)."""
    out_dir = Path(out_dir)
    path = Path(cfg.path).expanduser()
    langs = (cfg.src_lang, cfg.tgt_lang)
    if path.is_dir() and any(split_file(path, p.name.split(".")[0], lang) for p in path.iterdir() for lang in langs):
        names = sorted({p.name.split(".")[0] for p in path.iterdir()} - {cfg.train_split})
        copied = []
        for name in names:
            files = [split_file(path, name, lang) for lang in langs]
            if None in files:
                continue
            for source in files:
                atomic_write(out_dir / source.name, lambda tmp, source=source: shutil.copyfile(source, tmp))
            copied.append(name)
        return copied
    if path.is_file():
        logger.warning("%s is one TSV file of training pairs, without a validation split: the student will hold out "
                       "distilled pairs for validation (its validation BLEU then measures agreement with the "
                       "teachers); give a corpus directory with a val split to validate against references", path)
        return []
    copied = []
    for split in [cfg.valid_split, *test_split_names(cfg)]:
        try:
            pairs = read_split(cfg, split)
        except SplitNotFound:
            continue
        for column, lang in (("src", cfg.src_lang), ("tgt", cfg.tgt_lang)):
            write_lines(out_dir / f"{split}.{lang}", pairs[column])
        copied.append(split)
    return copied


def split_file(directory: Path, name: str, lang: str) -> Path | None:
    """``{name}.{lang}`` or ``{name}.{lang}.gz`` in ``directory`` (as :mod:`seq2seq.data` reads them), or None."""
    return next((p for p in (directory / f"{name}.{lang}", directory / f"{name}.{lang}.gz") if p.is_file()), None)


def write_lines(path: Path, lines) -> None:
    """``lines`` (an iterable of str), one per line, written atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            for line in lines:
                handle.write(line + "\n")

    atomic_write(path, write)


def read_outputs(path: Path) -> list[str]:
    """The teachers' output lines (UTF-8, ``\\n``-separated, as :mod:`seq2seq.distillation` writes them)."""
    return path.read_bytes().decode("utf-8").split("\n")[:-1]


def write_training_pairs(sources: Sequence[str], references: Sequence[str], outputs: Sequence[str], out_dir: Path,
                         src_lang: str, tgt_lang: str, on_empty: str = "reference",
                         with_references: bool = False) -> dict[str, int]:
    """Write ``train.{src_lang}`` / ``train.{tgt_lang}`` in ``out_dir``: each source with the teachers' output
    (``outputs[i]`` for ``sources[i]``; "" = none: the reference kept or the pair dropped, by ``on_empty``),
    then, with ``with_references``, every original pair. Returns the counts of what was written."""
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty must be one of {', '.join(ON_EMPTY)}, got {on_empty!r}")
    if not len(sources) == len(references) == len(outputs):
        raise ValueError(f"{len(sources)} sources, {len(references)} references and {len(outputs)} outputs: the "
                         "teachers' outputs must be complete, one per source")
    src_lines, tgt_lines = [], []
    counts = {"distilled": 0, "kept_references": 0, "dropped": 0, "references_added": 0}
    block = 4096
    for start in range(0, len(sources), block):
        for src, ref, out in zip(sources[start : start + block], references[start : start + block],
                                 outputs[start : start + block]):
            if out:
                src_lines.append(src), tgt_lines.append(out)
                counts["distilled"] += 1
            elif on_empty == "reference":
                counts["kept_references"] += 1
                if not with_references:  # the union below holds the reference anyway
                    src_lines.append(src), tgt_lines.append(ref)
            else:
                counts["dropped"] += 1
    if with_references:
        for start in range(0, len(sources), block):
            src_lines += sources[start : start + block]
            tgt_lines += references[start : start + block]
        counts["references_added"] = len(sources)
    write_lines(Path(out_dir) / f"train.{src_lang}", src_lines)
    write_lines(Path(out_dir) / f"train.{tgt_lang}", tgt_lines)
    counts["training_pairs"] = len(src_lines)
    return counts
