"""stdin in batches that follow the writer (seq2seq/lines.py), and the translate command line as a filter that
answers each line before the next one is written."""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.cli import ENV, SENTENCES

from seq2seq.translator import Translator
from seq2seq.lines import count_lines, line_batches

WAIT = 60  # seconds before a read that should return at once counts as stuck (a guard, not a measurement)


class Chunks:
    """An in-memory binary stream that hands out the given chunks, one per read (no file descriptor)."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def read1(self, size: int = -1) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def all_lines(*chunks: bytes, max_lines: int = 100) -> list[str]:
    return [line for batch in line_batches(Chunks(*chunks), max_lines) for line in batch]


@pytest.fixture
def pipe():
    """(read end as a binary file, write end fd); both closed afterwards."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb", buffering=0)
    yield reader, write_fd
    reader.close()
    try:
        os.close(write_fd)
    except OSError:
        pass


def next_batch(batches, executor: ThreadPoolExecutor) -> list[str]:
    return executor.submit(next, batches).result(timeout=WAIT)


def test_a_batch_is_what_has_arrived_on_a_pipe(pipe):
    reader, write_fd = pipe
    batches = line_batches(reader, max_lines=100)
    with ThreadPoolExecutor(1) as executor:
        os.write(write_fd, b"one\ntwo\nthree\n")
        assert next_batch(batches, executor) == ["one", "two", "three"]  # not waiting for 97 more
        os.write(write_fd, b"four\n")
        assert next_batch(batches, executor) == ["four"]
        os.write(write_fd, b"fi")  # half a line is not a line: the reader waits for its end
        waiting = executor.submit(next, batches)
        os.write(write_fd, b"ve\r")  # a CR ends it, once the next byte shows it is no CRLF
        os.write(write_fd, b"six")
        os.close(write_fd)
        rest = executor.submit(lambda: [line for batch in batches for line in batch]).result(timeout=WAIT)
        assert waiting.result(timeout=WAIT) + rest == ["five", "six"]


def test_full_batches_when_more_input_is_there():
    data = b"".join(b"line %d\n" % i for i in range(10))
    batches = list(line_batches(Chunks(data), max_lines=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [line for batch in batches for line in batch] == [f"line {i}" for i in range(10)]


@pytest.mark.parametrize("chunks,expected", [
    ((b"a\r", b"\nb\r", b"c\n"), ["a", "b", "c"]),  # a CRLF split between two reads is one line end
    ((b"a\r\n\r\nb",), ["a", "", "b"]),
    ((b"K\xc3", b"\xa4se\n"), ["K\u00e4se"]),  # a character split between two reads
    ((b"\xef\xbb", b"\xbfA\nB\xef\xbb\xbf\n"), ["A", "B\ufeff"]),  # only a leading byte-order mark is dropped
    ((b"x\n", b""), ["x"]), ((b"x\n\n",), ["x", ""]), ((b"",), []),  # an empty last line without a line end is none
    ((b"\xc2\x85\x0b\xe2\x80\xa8y\n",), ["\x85\x0b\u2028y"]),  # only LF, CR and CRLF end lines
])
def test_line_ends_and_decoding(chunks, expected):
    assert all_lines(*chunks) == expected


def test_undecodable_bytes_become_replacement_characters_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING):
        lines = all_lines(b"ok\ncaf\xe9\n", b"\xff\xfe\n")
    assert lines == ["ok", "caf\ufffd", "\ufffd\ufffd"]
    warnings = [r.getMessage() for r in caplog.records if "not valid UTF-8" in r.getMessage()]
    assert len(warnings) == 1 and "stdin line 2 " in warnings[0]


def test_count_lines_of_a_file_from_its_position(tmp_path, pipe):
    path = tmp_path / "input.txt"
    path.write_bytes(b"a\nb\r\nc")
    with open(path, "rb") as handle:
        assert count_lines(handle) == 3
        handle.seek(2)
        assert count_lines(handle) == 2 and handle.tell() == 2  # the position does not move
    path.write_bytes(b"")
    with open(path, "rb") as handle:
        assert count_lines(handle) == 0
    assert count_lines(pipe[0]) is None  # a pipe: unknown
    assert count_lines(Chunks(b"x\n")) is None


# ---------------------------------------------------------------------------- the command line as a filter
def read_line(fd: int, timeout: float) -> bytes:
    """One line from ``fd`` (raw reads); fails the test if it has not come after ``timeout`` seconds."""
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"no answer after {timeout} s (got {data!r} so far): the translator waits for more input"
        chunk = os.read(fd, 4096)
        assert chunk, f"output ended early after {data!r}"
        data += chunk
    return data


def test_translate_answers_each_line_before_the_next_is_written(tiny_model_dir):
    """A program that writes one line and waits for its translation before writing the next (stdin kept open)."""
    expected = Translator.load(tiny_model_dir, device="cpu").translate(SENTENCES)
    proc = subprocess.Popen([sys.executable, "-m", "seq2seq.translate", "--model", str(tiny_model_dir), "--device",
                             "cpu"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        for sentence, translation in zip(SENTENCES, expected):
            proc.stdin.write(sentence.encode() + b"\n")
            proc.stdin.flush()
            assert read_line(proc.stdout.fileno(), timeout=120).decode() == translation + "\n"
        proc.stdin.close()
        assert proc.wait(timeout=WAIT) == 0
        assert proc.stdout.read() == b""
        stderr = proc.stderr.read().decode()
        assert "line/s" not in stderr and "%|" not in stderr, stderr  # no progress bar when streaming
    finally:
        proc.kill()
        proc.stdout.close()
        proc.stderr.close()
