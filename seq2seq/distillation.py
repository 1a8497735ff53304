"""Sequence-level knowledge distillation, stage 1: the teachers' beam search over the training sources, written one
output line per source line, resumable (Kim and Rush 2016, arXiv 1606.07947; docs/distillation.md).

    progress = distil_sources(translator, sources, work_dir, identity, tgt_lang="de", beam_size=5)

The outputs grow in chunks of ``chunk_size`` sources. Each chunk is translated in one batched
:meth:`~seq2seq.translator.Translator.generate` call (sorted by length inside it), its lines appended to
``WORK/outputs.{tgt_lang}``, flushed and fsync'd, and only then recorded in ``WORK/progress.json`` (written
atomically): how many source lines and bytes of outputs are done. A rerun reads the record, checks that it is a
translation of the same sources by the same teachers with the same beam size, cuts the outputs file back to the
recorded bytes (a chunk written only in part when the process died is discarded, and its sources are translated
again), checks that the kept bytes hold exactly the recorded lines, and continues from the next source line: no
source is translated twice into the outputs, none is skipped.

The outputs are pure model outputs: no protected-span copying, no glossary, no confidence pass. A source longer
than the teachers' ``decode.max_src_length`` pieces is not translated (the teachers would read only its start);
its output line, like a teacher's empty output, is empty, and the corpus writer
(:mod:`seq2seq.distilled_corpus`) keeps the reference or drops the pair for both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from seq2seq.checkpoint import atomic_write_text
from seq2seq.translator import Translator

logger = logging.getLogger("seq2seq.distill")

PROGRESS_FILE = "progress.json"
#: the record's format; a record of another version is not continued
PROGRESS_VERSION = 1


class DistillationError(ValueError):
    """A distillation that cannot start or continue: the message names the file or flag and what to do."""


def outputs_file(work_dir: Path, tgt_lang: str) -> Path:
    """Where the teachers' outputs grow: one line per training source line."""
    return Path(work_dir) / f"outputs.{tgt_lang}"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def lines_sha256(lines: Sequence[str], block: int = 4096) -> str:
    """SHA-256 of the lines, each UTF-8 encoded and ended by a newline (what identifies the sources)."""
    digest = hashlib.sha256()
    for start in range(0, len(lines), block):
        digest.update("".join(line + "\n" for line in lines[start : start + block]).encode("utf-8"))
    return digest.hexdigest()


@dataclass
class Progress:
    """What ``progress.json`` records: the identity of the work (sources, teachers, beam size) and how much of
    it is done (source lines, bytes of the outputs file, chunks, counts, seconds spent translating)."""

    identity: dict
    lines: int = 0
    bytes: int = 0
    chunks: int = 0
    translated: int = 0  # sources the teachers translated (including those with an empty output)
    empty: int = 0  # of those, the empty outputs
    too_long: int = 0  # sources over decode.max_src_length pieces, not translated
    seconds: float = 0.0
    version: int = PROGRESS_VERSION
    finished: bool = False
    history: list = field(default_factory=list)  # (lines done, unix time) when each run of the command started

    def save(self, work_dir: Path) -> None:
        atomic_write_text(Path(work_dir) / PROGRESS_FILE, json.dumps(asdict(self), indent=1) + "\n")


def load_progress(work_dir: Path, identity: dict) -> Progress:
    """The progress recorded in ``work_dir`` for this work, or a fresh one; DistillationError when the record
    belongs to other work (other sources, teachers or beam size) or is damaged."""
    path = Path(work_dir) / PROGRESS_FILE
    if not path.is_file():
        return Progress(identity=identity)
    advice = f"delete {work_dir} to translate from the start, or choose another --out"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        progress = Progress(**record)
    except (ValueError, TypeError) as err:
        raise DistillationError(f"{path} is damaged ({err}); {advice}") from None
    if progress.version != PROGRESS_VERSION:
        raise DistillationError(f"{path} was written by another version of the toolkit (format {progress.version}); "
                                f"{advice}")
    for key, value in identity.items():
        if progress.identity.get(key) != value:
            raise DistillationError(
                f"{path} records a distillation with {key} = {progress.identity.get(key)!r}, but this one has "
                f"{value!r}: its outputs are translations of other sources, by other teachers or with another beam "
                f"size; rerun with the same --teachers, --data and --beam-size to continue it, or {advice}")
    return progress


def open_outputs(path: Path, progress: Progress):
    """The outputs file opened for appending after the recorded chunks: bytes past them (a chunk written in part, or
    written whole but not yet recorded) are cut off; DistillationError when the file holds less than the record
    says, or other than the recorded number of lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        if progress.lines:
            raise DistillationError(f"{path} is missing but {path.parent / PROGRESS_FILE} records {progress.lines} "
                                    f"lines done; delete {path.parent} to translate from the start")
        path.touch()
    size = path.stat().st_size
    if size < progress.bytes:
        raise DistillationError(f"{path} has {size} bytes but {path.parent / PROGRESS_FILE} records {progress.bytes}: "
                                f"the file was cut or replaced; delete {path.parent} to translate from the start")
    handle = open(path, "r+b")
    if size > progress.bytes:
        logger.info("discarding %d bytes after the last recorded chunk of %s (a chunk not finished when the run "
                    "stopped); its sources are translated again", size - progress.bytes, path)
        handle.truncate(progress.bytes)
        handle.flush()
        os.fsync(handle.fileno())
    handle.seek(0)
    kept = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    if kept != progress.lines:
        handle.close()
        raise DistillationError(f"{path} holds {kept} lines in its first {progress.bytes} bytes, but "
                                f"{path.parent / PROGRESS_FILE} records {progress.lines}; delete {path.parent} to "
                                "translate from the start")
    handle.seek(progress.bytes)
    return handle


def translate_chunk(translator: Translator, lines: list[str], beam_size: int, batch_size: int | None,
                    progress: Callable[[int], None] | None = None) -> tuple[list[str], dict[str, int]]:
    """(one output line per source line, counts): the teachers' best beam-search translation of each source line
    that fits ``decode.max_src_length``, "" for the others and for empty outputs."""
    limit = translator.cfg.decode.max_src_length
    fits = [len(ids) <= limit for ids in translator.src_tokenizer.encode(lines)]
    chosen = [line for line, ok in zip(lines, fits) if ok]
    if progress is not None and len(chosen) < len(lines):
        progress(len(lines) - len(chosen))
    results = translator.generate(chosen, beam_size=beam_size, batch_size=batch_size, confidence=False,
                                  preserve=False, progress=progress) if chosen else []
    texts = iter(" ".join(entry[0].text.split()) for entry in results)  # one line: no line breaks inside
    outputs = [next(texts) if ok else "" for ok in fits]
    translated = [out for out, ok in zip(outputs, fits) if ok]
    return outputs, {"translated": len(translated), "empty": sum(not out for out in translated),
                     "too_long": len(lines) - len(translated)}


def distil_sources(translator: Translator, sources: Sequence[str], work_dir: Path, identity: dict, *, tgt_lang: str,
                   beam_size: int, batch_size: int | None = None, chunk_size: int = 2000,
                   after_chunk: Callable[[Progress], None] | None = None, show_progress: bool = True) -> Progress:
    """Translate ``sources`` (a sequence of lines: ``sources[a:b]`` gives a list) into ``WORK/outputs.{tgt_lang}``,
    continuing the work recorded in ``work_dir`` (see the module docstring); returns the final progress.

    ``identity`` names the work (the sources' count and digest, the teachers' digests, the beam size): a record of
    other work is refused. ``after_chunk`` is called with the progress after each recorded chunk (an interruption
    there, e.g. Ctrl-C, loses nothing)."""
    if chunk_size < 1:
        raise DistillationError(f"--chunk-size must be >= 1, got {chunk_size}")
    work_dir = Path(work_dir)
    progress = load_progress(work_dir, identity)
    if progress.lines > len(sources):
        raise DistillationError(f"{work_dir / PROGRESS_FILE} records {progress.lines} lines done, more than the "
                                f"{len(sources)} sources; delete {work_dir} to translate from the start")
    progress.history.append([progress.lines, round(time.time())])
    handle = open_outputs(outputs_file(work_dir, tgt_lang), progress)
    if progress.lines:
        logger.info("continuing the distillation after %d of %d source lines (%d chunks recorded in %s)",
                    progress.lines, len(sources), progress.chunks, work_dir / PROGRESS_FILE)
    from tqdm import tqdm

    bar = tqdm(total=len(sources), initial=progress.lines, unit="sent", dynamic_ncols=True, disable=not show_progress)
    try:
        with handle:
            for start in range(progress.lines, len(sources), chunk_size):
                lines = list(sources[start : start + chunk_size])
                started = time.perf_counter()
                outputs, counts = translate_chunk(translator, lines, beam_size, batch_size, bar.update)
                data = "".join(line + "\n" for line in outputs).encode("utf-8")
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())  # the lines are on disk before the record that counts them
                progress.lines += len(lines)
                progress.bytes += len(data)
                progress.chunks += 1
                progress.seconds += time.perf_counter() - started
                for key, value in counts.items():
                    setattr(progress, key, getattr(progress, key) + value)
                progress.save(work_dir)
                if after_chunk is not None:
                    after_chunk(progress)
    finally:
        bar.close()
    progress.finished = True
    progress.save(work_dir)
    return progress
