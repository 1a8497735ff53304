"""Text lines in: a file read whole (:func:`read_lines`), or stdin in batches that follow the writer.

From stdin, :func:`line_batches` yields as many lines as are already there, never waiting for more.

A file piped in is read in full batches (throughput); a person at a terminal, or a program that writes one line
and waits for its answer, gets each line translated as soon as it arrives: a batch ends where no further input is
immediately available (``select`` with a zero timeout on the file descriptor).

Input is UTF-8 (a leading byte-order mark is dropped; LF, CRLF and CR end lines, also when a CRLF is split between
two reads); undecodable bytes become U+FFFD, with one warning naming the first such line.
"""

from __future__ import annotations

import codecs
import gzip
import io
import logging
import os
import select
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

#: bytes asked for per read: a pipe holds 64 KiB, a terminal hands over one line per read whatever is asked
READ_SIZE = 1 << 16

logger = logging.getLogger(__name__)


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` allowed), without line endings."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline=None) as handle:
            return [line.rstrip("\n").rstrip("\r") for line in handle]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not valid UTF-8 ({err.reason} at byte {err.start})") from None


def input_ready(fd: int) -> bool:
    """Whether reading ``fd`` would return at once (data or end of input). Regular files always are."""
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):  # not selectable (e.g. some Windows handles): read on, as for a file
        return True


def _reader(stream: BinaryIO) -> tuple[Callable[[], bytes], Callable[[], bool]]:
    """(read some bytes, is more input ready) for a binary stream: raw reads on its file descriptor when it has one
    (no hidden buffer between ``select`` and the data), else ``read1`` (in-memory streams are always ready)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return (lambda: stream.read1(READ_SIZE)), (lambda: True)
    return (lambda: os.read(fd, READ_SIZE)), (lambda: input_ready(fd))


def line_batches(stream: BinaryIO, max_lines: int) -> Iterator[list[str]]:
    """Lines of a binary stream (without line ends) in batches of 1 to ``max_lines``.

    A batch is handed out when it is full, or when it holds at least one line and no more input is ready, or at the
    end of input (where a last line without a line end counts, unless it is empty).
    """
    read, ready = _reader(stream)
    decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder("utf-8-sig")(errors="surrogateescape"),
                                           translate=True)  # CRLF and CR become LF; a trailing CR waits for the next read
    text = ""  # decoded input not handed out yet
    line_number = 0
    warned = False
    at_end = False
    while True:
        complete = text.count("\n")
        if not at_end and (complete == 0 or (complete < max_lines and ready())):
            data = read()
            at_end = not data
            text += decoder.decode(data, final=at_end)
            continue
        if complete >= max_lines:
            *lines, text = text.split("\n", max_lines)
        elif complete:
            *lines, text = text.split("\n")
        else:  # at the end, no line end left
            lines, text = ([text] if text else []), ""
        if not lines:
            return
        for i, line in enumerate(lines):
            line_number += 1
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:  # escaped undecodable bytes: decode those bytes again, replacing them
                lines[i] = line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                if not warned:
                    logger.warning("stdin line %d is not valid UTF-8; undecodable bytes were replaced with U+FFFD "
                                   "(warned once)", line_number)
                    warned = True
        yield lines


def count_lines(stream: BinaryIO) -> int | None:
    """Lines from the current position of a regular file to its end (for a progress bar); None for anything else
    (a pipe or a terminal: how much will come is unknown). Reads with ``pread``: the file position does not move."""
    try:
        fd = stream.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        position, size = os.lseek(fd, 0, os.SEEK_CUR), os.fstat(fd).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    lines, last = 0, b"\n"
    while position < size:
        block = os.pread(fd, 1 << 20, position)
        if not block:
            break
        lines += block.count(b"\n")
        last = block[-1:]
        position += len(block)
    return lines + (last != b"\n")
