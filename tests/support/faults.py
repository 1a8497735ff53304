"""Helpers of the fault tests: corpus lines and corpora written byte for byte, model directory copies and snapshots,
and the disk-full error."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

#: the smallest model and fastest settings: faults show up before (or regardless of) any real training
SMALL = ["tokenizer.vocab_size=100", "model.emb_size=8", "model.encoder_hidden_size=8", "model.decoder_hidden_size=8",
         "train.threads=1", "data.test_splits=[]",
         # one decoding per validation, as before the defaults became the recipe (its weight average is validated
         # beside the raw weights): these runs test faults, not the average
         "train.ema_decay=0"]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


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
