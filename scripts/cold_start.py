"""Cold start: translating one sentence from a new process, as a user runs it, with torch and with onnxruntime.

    PYTHONPATH=. python scripts/cold_start.py --model runs/multi30k_en_de --runs 7
    PYTHONPATH=. python scripts/cold_start.py --model DIR --backends onnx --runs 11 --json cold_start.json

Each run is a whole process, ``python -m seq2seq.translate --model DIR [--backend onnx] SENTENCE``, timed from
its start to its exit (the interpreter, the imports, loading the model, the translation, the exit); the backends
take turns, run after run, so that a machine whose load changes weighs on both alike. Then, per backend, the same
runs again inside a child process that times its phases: importing the Translator, ``Translator.load``, the first
translation (the rest of the whole-process time is the interpreter's start and exit). Printed: the median, the
fastest and the slowest of each; ``--json`` writes them too. The model needs ``MODEL/onnx`` for the onnx backend
(``python -m seq2seq.onnx_export --model DIR``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PHASES = """
import json, sys, time
started = time.perf_counter()
from seq2seq.translator import Translator
imported = time.perf_counter()
translator = Translator.load(sys.argv[1], backend=sys.argv[2])
loaded = time.perf_counter()
translator.translate(sys.argv[3])
done = time.perf_counter()
print(json.dumps({"import": imported - started, "load": loaded - imported, "first translation": done - loaded,
                  "torch imported": "torch" in sys.modules}))
"""


def whole_process(model: str, backend: str, sentence: str) -> float:
    """Seconds from the start of ``python -m seq2seq.translate`` to its exit (which must succeed)."""
    command = [sys.executable, "-m", "seq2seq.translate", "--model", model, "--backend", backend, sentence]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return elapsed


def phases(model: str, backend: str, sentence: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PHASES, model, backend, sentence], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"timing the phases failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory (with onnx/ for --backends onnx)")
    parser.add_argument("--runs", type=int, default=7, help="processes per backend (and again for the phases)")
    parser.add_argument("--backends", nargs="+", choices=["torch", "onnx"], default=["torch", "onnx"])
    parser.add_argument("--sentence", default="A man is riding a bike.")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")

    for backend in args.backends:  # a first, untimed run: the file cache and `dtype: auto`'s cached choice
        whole_process(args.model, backend, args.sentence)
    totals: dict[str, list[float]] = {backend: [] for backend in args.backends}
    for _ in range(args.runs):
        for backend in args.backends:
            totals[backend].append(whole_process(args.model, backend, args.sentence))
    report = {}
    for backend in args.backends:
        parts = [phases(args.model, backend, args.sentence) for _ in range(args.runs)]
        report[backend] = {"whole process": summary(totals[backend]),
                           **{name: summary([p[name] for p in parts]) for name in ("import", "load",
                                                                                  "first translation")},
                           "torch imported": parts[0]["torch imported"]}
    print(f"cold start, {args.runs} runs per backend, seconds (median [min-max]): {args.sentence!r}, {args.model}")
    for backend, figures in report.items():
        cells = ", ".join(f"{name} {f['median']:.2f} [{f['min']:.2f}-{f['max']:.2f}]"
                          for name, f in figures.items() if isinstance(f, dict))
        print(f"  {backend:5s}  {cells}; torch imported: {figures['torch imported']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
