"""Run a command line (``python -m seq2seq.X``) as a subprocess the way a user does, and read its output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, SUBPROCESS_ENV

SENTENCES = [
    "A man is riding a bike.", "Two dogs play in the snow.", "A girl in a red dress is walking down the street.",
]
ENV = SUBPROCESS_ENV  # one torch thread, no GPU


def run(module: str, *args: str, cwd: Path | None = None, stdin: str | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or REPO_ROOT, input=stdin,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout, env=ENV)


def output_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stdout split into lines, keeping empty lines and trailing spaces."""
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.endswith("\n")
    return result.stdout[:-1].split("\n")
