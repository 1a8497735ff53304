"""The test suite itself: under ``CI=true`` a missing Multi30k fails the tests that need it instead of skipping
them (a CI run must not pass with nearly every integration test skipped)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT


def run_corpus_test(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(SEQ2SEQ_MULTI30K=str(tmp_path / "no_corpus_here"), PYTHONPATH=str(REPO_ROOT))
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
               "tests/test_token_batches.py::test_multi30k_epoch_padding_under_ten_percent"]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_a_missing_corpus_fails_under_ci_and_skips_elsewhere(tmp_path):
    under_ci = run_corpus_test(tmp_path, "true")
    assert under_ci.returncode == 1, under_ci.stdout[-2000:]
    assert "CI=true needs the corpus" in under_ci.stdout and "1 error" in under_ci.stdout, under_ci.stdout[-2000:]
    local = run_corpus_test(tmp_path, None)
    assert local.returncode == 0 and "1 skipped" in local.stdout and "Multi30k not found" in local.stdout, \
        local.stdout[-2000:]


def test_the_page_test_fails_under_ci_without_a_browser(tmp_path):
    """.ci/run installs Chromium; where none is found, the browser test fails under CI=true instead of skipping."""
    env = {k: v for k, v in os.environ.items() if k != "SEQ2SEQ_CHROMIUM"}
    env.update(CI="true", PATH=str(tmp_path), PYTHONPATH=str(REPO_ROOT), CUDA_VISIBLE_DEVICES="")  # no chromium
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_serve_browser.py"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "no Chromium found" in result.stdout and "CI=true needs it" in result.stdout, result.stdout[-2000:]


def test_ci_reports_every_skip_with_its_reason():
    """.ci/run's pytest line asks for the skip reasons (``-rs``): a skip in CI is read, not counted."""
    lines = [line for line in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
             if "python -m pytest" in line and not line.lstrip().startswith("#")]
    assert lines and all(" -rs" in line.split("#")[0] for line in lines), lines
