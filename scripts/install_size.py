"""Disk space of an install, from the packages installed here: each requirement with every package it requires,
recursively, summed over the files their metadata lists (``RECORD``), as a fresh virtual environment holding them
would take (less the interpreter).

    python scripts/install_size.py                        # the full install against the runtime without torch
    python scripts/install_size.py torch onnxruntime      # any requirements, each with its closure

The full install is ``seq2seq``'s own dependencies (pyproject.toml); the runtime without torch is what
``--backend onnx`` imports: onnxruntime, sentencepiece and pyyaml, with what they require (numpy among them).
Extras of a requirement are not followed; packages missing here are named and left out.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

#: seq2seq's dependencies (pyproject.toml), and the runtime's (docs/onnx.md)
FULL = ["torch", "sentencepiece", "sacrebleu", "sacremoses", "datasets", "safetensors", "pyyaml", "tqdm",
        "matplotlib"]
RUNTIME = ["onnxruntime", "sentencepiece", "pyyaml"]


def closure(requirements: list[str]) -> tuple[set[str], set[str]]:
    """(installed distributions the requirements need, recursively; names not installed here)."""
    found, missing, todo = set(), set(), list(requirements)
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop().strip(), maxsplit=1)[0].lower().replace("_", "-")
        if not name or name in found or name in missing:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.add(name)
            continue
        found.add(name)
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return found, missing


def size_of(name: str) -> int:
    """Bytes of the files one installed distribution lists."""
    dist = metadata.distribution(name)
    total = 0
    for file in dist.files or []:
        path = file.locate()
        if path.is_file():
            total += path.stat().st_size
    return total


def report(label: str, requirements: list[str]) -> int:
    names, missing = closure(requirements)
    sizes = {name: size_of(name) for name in names}
    total = sum(sizes.values())
    largest = ", ".join(f"{n} {s / 2**20:.0f}" for n, s in sorted(sizes.items(), key=lambda x: -x[1])[:4])
    print(f"{label}: {total / 2**20:.0f} MiB in {len(names)} packages (largest, MiB: {largest})"
          + (f"; not installed here: {', '.join(sorted(missing))}" if missing else ""))
    return total


def main(argv: list[str]) -> int:
    if argv:
        report(" + ".join(argv), argv)
        return 0
    full = report("full install (seq2seq's dependencies)", FULL)
    runtime = report("runtime without torch (onnxruntime, sentencepiece, pyyaml)", RUNTIME)
    print(f"the runtime takes {runtime / full:.1%} of the full install's space ({full / runtime:.0f}x less)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
