"""Property-based robustness of translation input: the Python API, the CLI in-process and as a subprocess.

Arbitrary Unicode (control characters, NUL, combining marks, emoji, right-to-left scripts and bidi controls, lone
surrogates, whitespace-only text, lines of 10,000+ characters, characters never seen in training) must never crash
the translator: exactly one output per input, in input order, never a line break inside an output.

The number of examples: :mod:`support.fuzzing` (a small fixed budget in CI; ``SEQ2SEQ_FUZZ_EXAMPLES=N`` for a
campaign, ``scripts/fuzz_campaign.py``). The argument vectors of the command lines: ``test_fuzz_argv.py``; more API
calls and argument types: ``test_fuzz_calls.py``; the HTTP service over a socket: ``test_fuzz_http.py``.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import SUBPROCESS_ENV
from hypothesis import given
from hypothesis import strategies as st
from support.fuzzing import LINE_BREAKS, budget, make_fuzz_model, texts

from seq2seq.translator import Translation, Translator
from seq2seq.tokenizer import EOS_ID

FUZZ = budget(ci=200, share=0.04)
CLI_FUZZ = budget(ci=20, share=0.02)
SUBPROCESS_FUZZ = budget(ci=1, share=0.0002)
ENV = SUBPROCESS_ENV  # one torch thread, no GPU


def cli_line_bytes() -> st.SearchStrategy[bytes]:
    """One stdin line as bytes (no \\n or \\r): UTF-8 text (lone surrogates make invalid UTF-8) or raw bytes."""
    as_text = texts(line_breaks=False).map(lambda s: s.encode("utf-8", "surrogatepass"))
    raw = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))
    return st.one_of(as_text, as_text, raw)


@st.composite
def stdin_batches(draw, min_lines: int = 0, max_lines: int = 12) -> tuple[bytes, list[bytes]]:
    """(stdin bytes, the lines the CLI must see). One line-end style per batch, so that an "\\r" ending is never
    followed by an "\\n" ending (which would be one CRLF); the last line may lack its line end."""
    lines = draw(st.lists(cli_line_bytes(), min_size=min_lines, max_size=max_lines))
    style = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))
    endings = [draw(st.sampled_from([b"\n", b"\r\n"])) if style == "mixed" else style.encode() for _ in lines]
    data = b"".join(line + end for line, end in zip(lines, endings))
    if lines and not draw(st.booleans()):  # no line end after the last line
        data = data[: len(data) - len(endings[-1])]
        if not lines[-1]:
            lines = lines[:-1]  # an empty last line without a line end is no line at all
    return data, lines


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def fuzz_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return make_fuzz_model(tiny_model_dir, tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread(tiny_model_dir):
    """One torch thread (set after training the fixture model, which sets its own): the CI machine's two cores
    are shared, and two threads then run far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fuzz_translator(fuzz_model_dir) -> Translator:
    return Translator.load(fuzz_model_dir, device="cpu")


@pytest.fixture(scope="module")
def tiny_translator(tiny_model_dir) -> Translator:
    return Translator.load(tiny_model_dir, device="cpu")


def expected_src_pieces(tr: Translator, line: str) -> list[str]:
    ids = tr.src_tokenizer.encode([line])[0][: tr.cfg.decode.max_src_length] + [EOS_ID]
    return [tr.src_tokenizer.id_to_piece(i) for i in ids]


@contextmanager
def captured_warnings(logger_name: str):
    """Messages of warnings logged to ``logger_name`` ("" = root), whatever handlers training left behind."""
    messages: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger(logger_name)
    handler = Capture(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


# ------------------------------------------------------------------------------------------ the API
@FUZZ
@given(lines=st.lists(texts(), max_size=5), beam_size=st.sampled_from([1, 1, 3]))
def test_api_any_unicode_one_output_per_input_in_order(fuzz_translator, lines, beam_size):
    tr = fuzz_translator
    out = tr.translate(lines, beam_size=beam_size)
    assert isinstance(out, list) and len(out) == len(lines)
    for line, text in zip(lines, out):
        assert isinstance(text, str)
        assert not any(c in LINE_BREAKS for c in text), (line[:50], text)
        if not line.strip():
            assert text == ""
    # Order: each result carries the source pieces it was decoded from; they must be its own input's.
    rich = [entry[0] for entry in tr.generate(lines, beam_size=beam_size, return_attention=True)]
    assert [t.text for t in rich] == out
    for line, translation in zip(lines, rich):
        if line.strip():
            pieces = expected_src_pieces(tr, line)
            assert translation.src_pieces == pieces
            assert translation.attention.shape == (len(translation.tokens) + 1, len(pieces))
    if lines:
        assert tr.translate(lines[0], beam_size=beam_size) == out[0]


@pytest.fixture(scope="module")
def fuzz_translators(fuzz_model_dir) -> dict[str, Translator]:
    """The fuzz model under bf16 autocast and under the default dtype ``auto`` (fp32 or bf16, measured)."""
    return {dtype: Translator.load(fuzz_model_dir, device="cpu", dtype=dtype) for dtype in ("bf16", "auto")}


#: score tolerance per compute dtype (as in tests/test_translator.py): tokens must be identical
SCORE_TOLERANCE = {None: 1e-4, torch.bfloat16: 2e-2}


@budget(ci=20, share=0.01)
@given(lines=st.lists(texts(), min_size=1, max_size=4), beam_size=st.sampled_from([1, 3]))
def test_api_batched_equals_alone_under_bf16_and_auto(fuzz_translators, lines, beam_size):
    """Any Unicode, batched against one at a time, under bf16 and the default ``auto``: the same tokens, scores
    within the dtype's tolerance, each result decoded from its own input's pieces."""
    for tr in fuzz_translators.values():
        tolerance = SCORE_TOLERANCE[tr.autocast_dtype]
        batched = [entry[0] for entry in tr.generate(lines, beam_size=beam_size, return_attention=True)]
        for line, together in zip(lines, batched):
            [[alone]] = tr.generate([line], beam_size=beam_size)
            assert together.tokens == alone.tokens and together.text == alone.text
            assert together.score == pytest.approx(alone.score, abs=tolerance)
            if line.strip():
                assert together.attention.shape[1] == len(expected_src_pieces(tr, line))


@budget(ci=10, share=0.02)
@given(line=texts(), nbest=st.integers(1, 3))
def test_api_nbest_and_scores_any_unicode(fuzz_translator, line, nbest):
    result = fuzz_translator.generate([line, "A dog."], beam_size=3, nbest=nbest)
    assert len(result) == 2
    first = result[0]
    assert 1 <= len(first) <= nbest
    for hyp in first:
        assert not any(c in LINE_BREAKS for c in hyp.text)
        if not line.strip():
            assert (hyp.text, hyp.score) == ("", 0.0)


@pytest.mark.parametrize("line", [
    "A man is riding a bike. " * 500,                      # 12,500 characters, thousands of pieces
    "\U0001f600\U0001f3fd \u0645\u0631\u062d\u0628\u0627 " * 2000,  # emoji and Arabic, never seen in training
    "x" * 20_000,                                          # one word, 20,000 characters
])
def test_api_long_lines_are_truncated_with_a_warning(tiny_translator, line):
    """Real limit (decode.max_src_length = 250): translated from the first 250 pieces, with a warning naming the
    input by its position in the call."""
    with captured_warnings("seq2seq.translator_inputs") as warnings:
        out = tiny_translator.translate(["", line], beam_size=1)
    assert len(out) == 2 and out[0] == ""
    assert not any(c in LINE_BREAKS for c in out[1])
    assert any("input 2 " in w and "max_src_length" in w for w in warnings), warnings


def test_api_edge_cases(fuzz_translator):
    tr = fuzz_translator
    assert tr.translate([]) == []
    assert tr.translate("") == "" and tr.translate(" \t\u3000\u2028") == ""
    # a string with a newline is still one input: decoded from the pieces of both words (a newline is whitespace)
    [[one]] = tr.generate(["A\nman"], return_attention=True)
    assert isinstance(one.text, str) and one.src_pieces == expected_src_pieces(tr, "A man")
    assert expected_src_pieces(tr, "A man") != expected_src_pieces(tr, "A")
    assert "\n" not in tr.translate("A\nman\r\nis\rhere")
    with pytest.raises(TypeError, match="item 1"):
        tr.translate(["ok", b"bytes"])
    with pytest.raises(ValueError, match="beam_size"):
        tr.translate("x", beam_size=0)
    with pytest.raises(ValueError, match="nbest"):
        tr.generate(["x"], beam_size=2, nbest=3)
    with pytest.raises(ValueError, match="batch_size"):
        tr.translate("x", batch_size=0)


# ------------------------------------------------------------------------------------------ the CLI
@contextmanager
def cli_io(stdin: bytes):
    """Run ``seq2seq.translate.main`` in-process on ``stdin`` bytes; yields (stdout, captured warnings)."""
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    fake_stdin = mock.Mock(buffer=io.BytesIO(stdin))
    with captured_warnings("") as warnings:
        with mock.patch.object(sys, "stdin", fake_stdin), mock.patch.object(sys, "stdout", stdout):
            yield stdout, warnings


def check_cli_output(out: bytes, lines: list[bytes]) -> None:
    text = out.decode("utf-8")  # strict: the CLI writes valid UTF-8
    assert "\r" not in text
    assert text == "" or text.endswith("\n")
    outputs = text.split("\n")[:-1]
    assert len(outputs) == len(lines), (len(outputs), len(lines))
    for line, output in zip(lines, outputs):
        if not line.decode("utf-8", "replace").strip():
            assert output == "", (line, output)


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@CLI_FUZZ
@given(batch=stdin_batches(max_lines=12), beam_size=st.sampled_from(["1", "3"]))
def test_cli_stdin_in_process(fuzz_model_dir, batch, beam_size):
    from seq2seq.translate import main

    data, lines = batch
    with cli_io(data) as (stdout, warnings):
        assert main(["--model", str(fuzz_model_dir), "--device", "cpu", "--beam-size", beam_size]) == 0
        stdout.flush()
        check_cli_output(stdout.buffer.getvalue(), lines)
    if not is_utf8(data):
        assert any("not valid UTF-8" in w for w in warnings), warnings


def run_cli(args: list, stdin: bytes | None = None, env: dict | None = None, cwd: Path | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seq2seq.translate", *args], input=stdin, capture_output=True,
                          timeout=timeout, cwd=cwd, env={**ENV, **(env or {})})


@SUBPROCESS_FUZZ
@given(batch=stdin_batches(min_lines=60, max_lines=150))
def test_cli_subprocess_one_big_stdin_batch(fuzz_model_dir, batch):
    data, lines = batch
    proc = run_cli(["--model", fuzz_model_dir, "--device", "cpu", "--batch-size", "16"], stdin=data)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")[-2000:]
    assert b"Traceback" not in proc.stderr
    check_cli_output(proc.stdout, lines)
    if not is_utf8(data):
        assert b"not valid UTF-8" in proc.stderr


NASTY_LINES = [
    b"\xef\xbb\xbfA man with a byte-order mark.",
    b"A man.", b"", b"   \t ", b"\x00\x00", b"caf\xe9 latin-1", b"\xed\xa0\x80 lone surrogate", b"\xff\xfe\xfd",
    b"\xe2\x80", "Zwei M\u00e4nner \u202eevil\u202c \U0001f468\u200d\U0001f469\u200d\U0001f467".encode(),
    "\u2028\x85\x0b\x0c\x1c".encode(), ("w\u0301rd " * 3000).encode(), b"",
]


def test_cli_subprocess_nasty_stdin(tiny_model_dir, tmp_path):
    """Invalid UTF-8 is replaced with U+FFFD plus one warning; LF, CRLF and CR endings, a BOM, NUL, a 15,000-character
    line (truncated, with a warning) and a missing final line end: exactly one output line per input line."""
    # LF lines, then CRLF lines, then CR lines (a CR line end followed by an LF one would read as one CRLF)
    data = b"".join(line + end for end in (b"\n", b"\r\n", b"\r") for line in NASTY_LINES) + b"no line end"
    lines = NASTY_LINES * 3 + [b"no line end"]
    proc = run_cli(["--model", tiny_model_dir, "--device", "cpu", "--beam-size", "1"], stdin=data, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    assert b"Traceback" not in proc.stderr
    check_cli_output(proc.stdout, lines)
    assert proc.stderr.count(b"not valid UTF-8") == 1 and b"stdin line 6 " in proc.stderr, proc.stderr
    assert b"max_src_length" in proc.stderr  # the long line was truncated, with a warning


def test_cli_subprocess_odd_arguments(tiny_model_dir, tmp_path):
    """Arguments: empty, right-to-left, with a newline, dash-led, undecodable bytes in argv: one line out each."""
    args = [b"--model", os.fsencode(tiny_model_dir), b"--device", b"cpu", b"--beam-size", b"1", b"--",
            b"", "\u200f\u0645\u0631\u062d\u0628\u0627".encode(), b"two\nlines", b"-x", b"\xff\xfe"]
    proc = subprocess.run([os.fsencode(sys.executable), b"-m", b"seq2seq.translate", *args], capture_output=True,
                          timeout=180, cwd=tmp_path, env=ENV)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
    outputs = proc.stdout.decode("utf-8").split("\n")
    assert len(outputs) == 6 and outputs[0] == "" and outputs[-1] == "", outputs


def test_cli_empty_stdin_in_process(fuzz_model_dir):
    from seq2seq.translate import main

    with cli_io(b"") as (stdout, warnings):
        assert main(["--model", str(fuzz_model_dir), "--device", "cpu"]) == 0
        stdout.flush()
        assert stdout.buffer.getvalue() == b"" and warnings == []


def test_cli_subprocess_reader_going_away_is_quiet(fuzz_model_dir, tmp_path):
    """`translate < big | head -1`: the broken pipe ends the process quietly, no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "seq2seq.translate", "--model", str(fuzz_model_dir), "--device",
                             "cpu"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                            env=ENV)
    try:
        writer = threading.Thread(target=lambda: _feed(proc.stdin, b"A man is riding a bike.\n" * 20_000))
        writer.start()
        assert proc.stdout.readline()  # one line arrives, then the reader goes away
        proc.stdout.close()
        stderr = proc.stderr.read()
        assert proc.wait(timeout=180) in (0, 1)
        writer.join()
    finally:
        proc.kill()
    assert b"Traceback" not in stderr, stderr


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except BrokenPipeError:
        pass


def test_cli_writes_utf8_whatever_the_locale(tiny_model_dir, monkeypatch):
    """Output is UTF-8 even where Python's stdout would default to another encoding."""
    from seq2seq.translate import main

    text = "Käse \u2047 \U0001f600"  # the command line decodes with generate: one n-best list per input
    monkeypatch.setattr(Translator, "generate", lambda self, lines, **kw: [[Translation(text, [], 0.0)] for _ in lines])
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii", newline="")
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["--model", str(tiny_model_dir), "--device", "cpu", "hello"]) == 0
    stdout.flush()
    assert stdout.buffer.getvalue() == "Käse \u2047 \U0001f600\n".encode()


# ------------------------------------------------------------------------------------------ threads
def test_one_translator_shared_by_threads(tiny_translator):
    """4 threads translating with one Translator (greedy and beam, n-best) give the sequential results."""
    tr = tiny_translator
    batches = [["A man is riding a bike.", "Two dogs play in the snow."],
               ["A girl in a red dress.", "", "\u0645\u0631\u062d\u0628\u0627 \U0001f600"],
               ["People are walking down the street near a building.", "A dog."],
               ["Three children.", "A woman sings."]]
    jobs = [(batch, beam) for batch in batches for beam in (1, 3)]

    def run(job):
        batch, beam = job
        result = tr.generate(batch, beam_size=beam, nbest=min(beam, 2))
        flat = [h for entry in result for h in entry]
        return [(h.text, tuple(h.tokens), round(h.score, 4)) for h in flat]

    expected = [run(job) for job in jobs]
    barrier = threading.Barrier(4)

    def worker(offset: int):
        barrier.wait()
        order = jobs[offset:] + jobs[:offset]  # every thread starts on a different job
        return [run(job) for job in order], offset

    with ThreadPoolExecutor(4) as pool:
        for results, offset in pool.map(worker, [0, 2, 4, 6]):
            assert results == expected[offset:] + expected[:offset]
