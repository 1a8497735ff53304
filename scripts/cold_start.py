"""Cold start: translating one sentence from a new process, as a user runs it, with torch and with onnxruntime.

    PYTHONPATH=. python scripts/cold_start.py --model runs/multi30k_en_de --runs 7
    PYTHONPATH=. python scripts/cold_start.py --model DIR --backends onnx --runs 11 --json cold_start.json
    PYTHONPATH=. python scripts/cold_start.py --model DIR --against ../main     # before / after, taking turns

Each run is a whole process, ``python -m seq2seq.translate --model DIR [--backend onnx] SENTENCE``, timed from
its start to its exit (the interpreter, the imports, loading the model, the translation, the exit), with the CPU
time it used (user + system; on a machine shared with other work, the wall time stretches more); the backends
take turns, run after run, so that a machine whose load changes weighs on both alike. Then, per backend, the same
runs again inside a child process that times its phases: importing the Translator, ``Translator.load``, the first
translation (the rest of the whole-process time is the interpreter's start and exit). Printed: the median, the
fastest and the slowest of each; ``--json`` writes them too. The model needs ``MODEL/onnx`` for the onnx backend
(``python -m seq2seq.onnx_export --model DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def whole_process(model: str, backend: str, sentence: str, checkout: Path | None = None) -> tuple[float, float]:
    """(seconds from the start of ``python -m seq2seq.translate`` to its exit, which must succeed; the CPU
    seconds it used, user + system: what a busy machine stretches less). ``checkout``: run that checkout's
    package instead of the one on the path."""
    command = [sys.executable, "-m", "seq2seq.translate", "--model", model, "--backend", backend, sentence]
    env = None if checkout is None else {**os.environ, "PYTHONPATH": str(checkout)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=checkout)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


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
    parser.add_argument("--against", type=Path, metavar="CHECKOUT",
                        help="another checkout of the repository (e.g. a worktree of main) whose whole processes "
                             "take turns with these: before and after, in the same sitting")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")

    checkouts = [None] + ([args.against.resolve()] if args.against else [])
    for checkout in checkouts:  # a first, untimed run: the file cache and `dtype: auto`'s cached choice
        for backend in args.backends:
            whole_process(args.model, backend, args.sentence, checkout)
    totals: dict[tuple, list[tuple[float, float]]] = {(c, b): [] for c in checkouts for b in args.backends}
    for _ in range(args.runs):
        for checkout, backend in totals:
            totals[checkout, backend].append(whole_process(args.model, backend, args.sentence, checkout))
    report = {}
    for checkout in checkouts[1:]:
        for backend in args.backends:
            runs = totals[checkout, backend]
            report[f"{backend} ({checkout})"] = {"whole process": summary([wall for wall, _ in runs]),
                                                 "its CPU time": summary([cpu for _, cpu in runs])}
    for backend in args.backends:
        parts = [phases(args.model, backend, args.sentence) for _ in range(args.runs)]
        report[backend] = {"whole process": summary([wall for wall, _ in totals[None, backend]]),
                           "its CPU time": summary([cpu for _, cpu in totals[None, backend]]),
                           **{name: summary([p[name] for p in parts]) for name in ("import", "load",
                                                                                  "first translation")},
                           "torch imported": parts[0]["torch imported"]}
    print(f"cold start, {args.runs} runs per backend, seconds (median [min-max]): {args.sentence!r}, {args.model}")
    for backend, figures in report.items():
        cells = ", ".join(f"{name} {f['median']:.2f} [{f['min']:.2f}-{f['max']:.2f}]"
                          for name, f in figures.items() if isinstance(f, dict))
        torch_note = f"; torch imported: {figures['torch imported']}" if "torch imported" in figures else ""
        print(f"  {backend:5s}  {cells}{torch_note}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
