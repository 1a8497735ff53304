"""The command lines fuzzed in-process: ``main(argv)`` of ``translate``, ``score`` and ``evaluate`` with argument
vectors drawn from their real flags (values in range, out of range, of the wrong type, missing, repeated), unknown
flags, odd text as arguments, input files of any bytes (or missing, or a directory), and any bytes on stdin.

Every run ends with exit status 0, or 2 with exactly one ``error:`` line on stderr; never a traceback (an
exception out of ``main``), never another status. In-process, so that thousands of runs are affordable (the
subprocess runs are in ``test_fuzz.py``). The budget: :mod:`support.fuzzing` (CI: 60 runs; a campaign: 0.98 of
the command-line surface's).
"""

from __future__ import annotations

import copy
import io
import os
import sys
import tempfile
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from support.fuzzing import budget, make_fuzz_model, texts

from seq2seq import evaluate, score, translate
from seq2seq.translator import Translator

COMMANDS = {"translate": translate.main, "score": score.main, "evaluate": evaluate.main}


def as_argv(text: str) -> str:
    """``text`` as an operating system could pass it in argv: no NUL; undecodable bytes as surrogate escapes."""
    return os.fsdecode(text.encode("utf-8", "surrogatepass").replace(b"\0", b""))


ARG_TEXT = texts(long=False).map(as_argv)
JUNK = st.sampled_from(["", "x", "-1", "0", "1e3", "nan", "inf", "-inf", "3.5", "99999999999999999999", "0x10",
                        " 2", "２", "None", "true"]) | ARG_TEXT
INTS = st.integers(-2, 6).map(str) | JUNK
FLOATS = st.sampled_from(["0", "0.5", "1", "1.5", "-1", "nan", "inf", "1e-9"]) | JUNK
#: value strategies of each flag; "FILE:" values are made into files by :func:`materialize`
FLAGS = {
    "--beam-size": INTS, "--nbest": INTS, "--batch-size": INTS, "--top-k": INTS, "--seed": INTS,
    "--temperature": FLOATS, "--top-p": FLOATS,
    "--threads": st.sampled_from(["1", "0", "-1", "two", ""]),  # never > 1: torch's thread count is global
    "--device": st.sampled_from(["cpu", "cpu", "auto", "cuda", "tpu", ""]),
    "--dtype": st.sampled_from(["fp32", "fp32", "bf16", "fp16", "tf32", "auto", "int4"]),
    "--backend": st.sampled_from(["torch", "torch", "onnx", "tensorflow"]),
    "--quantize": st.sampled_from(["none", "int8", "int4"]),
    "--prefix": ARG_TEXT, "--constraints": ARG_TEXT,
    "--lang": st.sampled_from(["de", "en", "xx", ""]) | ARG_TEXT,
    "--glossary": st.just("FILE:glossary"),
    "--src": st.just("FILE:src"), "--tgt": st.just("FILE:tgt"), "--ref": st.just("FILE:ref"), "--hyp": st.just("FILE:hyp"),
    "--out": st.sampled_from(["OUT:out.txt", "OUT:missing/out.txt"]),
    "--plot-attention": st.sampled_from(["OUT:missing/a.png", "OUT:", "OUT:missing/b.png", "OUT:a.png"]),
}
SWITCHES = ["--json", "--alignments", "--sampling", "--no-progress", "--no-preserve", "--no-confidence"]
COMMAND_FLAGS = {
    "translate": ["--beam-size", "--nbest", "--batch-size", "--top-k", "--seed", "--temperature", "--top-p", "--threads",
                  "--device", "--dtype", "--backend", "--quantize", "--prefix", "--constraints", "--glossary",
                  "--plot-attention"],
    "score": ["--src", "--tgt", "--batch-size", "--threads", "--device", "--dtype"],
    "evaluate": ["--src", "--hyp", "--ref", "--lang", "--out", "--beam-size", "--batch-size", "--threads", "--device",
                 "--dtype", "--quantize", "--glossary"],
}
LINES = st.lists(st.binary(max_size=20) | texts(line_breaks=False, long=False).map(
    lambda s: s.encode("utf-8", "surrogatepass")), max_size=4)
#: the contents of an input file: lines of text or bytes, a glossary, nothing, or no file at all / a directory
FILE_CONTENTS = st.one_of(
    LINES.map(lambda lines: b"".join(line.replace(b"\n", b" ") + b"\n" for line in lines)),
    LINES.map(lambda lines: b"\t".join(lines)), st.just(b""), st.just(b"A man .\nTwo dogs .\n"),
    st.just(b'{"bike": "Fahrrad"}'), st.just(b"bike\tFahrrad\n\tx\n"), st.just(None), st.just("DIR"),
)


@st.composite
def runs(draw) -> tuple[str, list[str], dict[str, object], bytes]:
    """(command, argv with placeholders, file contents, stdin)."""
    command = draw(st.sampled_from(["translate", "translate", "translate", "score", "evaluate"]))
    argv: list[str] = []
    model = draw(st.sampled_from(["MODEL"] * 12 + ["NOWHERE", "FILE:model", "OUT:", None]))
    if model is not None:
        argv += ["--model", model]
    if command in ("score", "evaluate") and draw(st.integers(0, 5)) > 0:  # usually the required files
        argv += ["--src", "FILE:src", "--tgt" if command == "score" else "--ref", "FILE:tgt"]
    flags = draw(st.lists(st.sampled_from(COMMAND_FLAGS[command] + SWITCHES + ["--unknown", "-h", "-", "--", "ARG"]),
                          max_size=5))
    for flag in flags:
        if flag == "ARG":
            argv.append(draw(ARG_TEXT))
        elif flag in FLAGS:
            argv += [flag] if draw(st.integers(0, 19)) == 0 else [flag, draw(FLAGS[flag])]  # a value may be missing
        elif flag == "-h" and draw(st.integers(0, 3)) > 0:
            continue  # help is cheap and says little: rarer
        else:
            argv.append(flag)
    if command == "translate" and draw(st.booleans()):
        argv += draw(st.lists(ARG_TEXT, min_size=1, max_size=3))  # texts as arguments instead of stdin
    names = {value.split(":", 1)[1] for value in argv if value.startswith("FILE:")}
    files = {name: draw(FILE_CONTENTS) for name in sorted(names)}
    stdin = b"".join(line + b"\n" for line in draw(LINES)) if command == "translate" else b""
    return command, argv, files, stdin


def materialize(argv: list[str], files: dict[str, object], model_dir: Path, tmp: Path) -> list[str]:
    """Placeholders made real: MODEL, NOWHERE, FILE:name (written, missing or a directory), OUT:path."""
    for name, content in files.items():
        path = tmp / name
        if content == "DIR":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)
    out = []
    for value in argv:
        if value == "MODEL":
            value = str(model_dir)
        elif value == "NOWHERE":
            value = str(tmp / "no_model")
        elif value.startswith(("FILE:", "OUT:")):
            value = str(tmp / value.split(":", 1)[1])
        out.append(value)
    return out


@contextmanager
def captured(stdin: bytes, cwd: Path):
    """sys.stdin / stdout (bytes underneath) / stderr of one in-process run, in ``cwd``."""
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    stderr = io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with mock.patch.object(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")), \
                mock.patch.object(sys, "stdout", stdout), redirect_stderr(stderr):
            yield stdout, stderr
    finally:
        os.chdir(previous)


def run_in_process(command: str, argv: list[str], stdin: bytes, cwd: Path) -> tuple[int, bytes, str]:
    """(exit status, stdout, stderr) of ``main(argv)``; an exception out of main propagates (a traceback)."""
    with captured(stdin, cwd) as (stdout, stderr):
        try:
            status = COMMANDS[command](argv)
        except SystemExit as exit_:  # argparse: --help (0), a bad flag (2)
            status = exit_.code
        stdout.flush()
        return status, stdout.buffer.getvalue(), stderr.getvalue()


def check_run(status, out: bytes, err: str) -> None:
    assert status in (0, 2), (status, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    out.decode("utf-8")  # strict: the command lines write UTF-8
    errors = [line for line in err.splitlines() if line.startswith("error:") or ": error: " in line]
    if status == 2:
        assert len(errors) == 1, err[-2000:]
    else:
        assert not errors, err[-2000:]


@pytest.fixture(scope="module")
def fuzz_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return make_fuzz_model(tiny_model_dir, tmp_path_factory.mktemp("fuzz_argv"))


@pytest.fixture(scope="module", autouse=True)
def _each_load_once():
    """``Translator.load`` really loads once per distinct set of arguments; later runs with the same arguments get a
    shallow copy of that translator (what a command line sets on it stays its own). A failing load fails every
    time. Loading (~40 ms) would otherwise be most of a run; what loads and refuses model directories is tested by
    test_checkpoint.py and test_faults.py, here it is the flags, the files and the input."""
    real_load = Translator.load.__func__
    loaded: dict[str, Translator] = {}

    def load(cls, *args, **kwargs):
        key = repr((args, sorted(kwargs.items())))
        if key not in loaded:
            loaded[key] = real_load(cls, *args, **kwargs)
        return copy.copy(loaded[key])

    with mock.patch.object(Translator, "load", classmethod(load)):
        yield


@budget(ci=60, share=0.98)
@given(run=runs())
def test_cli_any_argv_exits_0_or_2_with_one_error_line_never_a_traceback(fuzz_model_dir, run):
    command, argv, files, stdin = run
    with tempfile.TemporaryDirectory() as tmp:
        real_argv = materialize(argv, files, fuzz_model_dir, Path(tmp))
        status, out, err = run_in_process(command, real_argv, stdin, Path(tmp))
        event("exit", f"{command} {status}")  # counted by scripts/fuzz_campaign.py
        check_run(status, out, err)


@pytest.mark.parametrize(("command", "argv", "status"), [
    ("translate", ["--model", "MODEL", "--device", "cpu", "A man."], 0),
    ("translate", ["--model", "MODEL", "--beam-size", "0", "A man."], 2),
    ("translate", ["--model", "NOWHERE", "A man."], 2),
    # found by the campaign: undecodable bytes in an argument, copied verbatim by a protected span (a traceback)
    ("translate", ["--model", "MODEL", as_argv(":\ud800")], 0),
    ("score", ["--model", "MODEL", "--src", "FILE:src", "--tgt", "FILE:tgt"], 0),
    ("score", ["--model", "MODEL", "--src", "FILE:src", "--tgt", "FILE:one"], 2),  # 2 lines against 1
    ("evaluate", ["--hyp", "FILE:src", "--ref", "FILE:tgt"], 0),
    ("evaluate", ["--hyp", "FILE:src", "--ref", "FILE:missing"], 2),
])
def test_the_runs_reach_both_outcomes(fuzz_model_dir, tmp_path, command, argv, status):
    """The checks are not vacuous: real runs that succeed and real runs that fail, each as expected."""
    files = {"src": b"A man .\nTwo dogs .\n", "tgt": b"Ein Mann .\nZwei Hunde .\n", "one": b"Ein Mann .\n",
             "missing": None}
    result = run_in_process(command, materialize(argv, files, fuzz_model_dir, tmp_path), b"", tmp_path)
    check_run(*result)
    assert result[0] == status, result[2]
