"""notebooks/learners_path runs: its jupytext source (``.py``, percent format) executes top to bottom in a Jupyter
kernel (nbclient) on the tiny corpus with a tiny model and 20 training steps, a failing cell (every check in it is an
``assert``) failing the test; the executed copy (``.ipynb``) holds exactly the source's cells, run, with their
figures; and a bug planted in the toolkit's cell, attention or beam search stops the notebook at the section that
checks that part."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, SUBPROCESS_ENV

try:
    import jupytext
    import nbformat
except ImportError:  # the test extra installs them; CI must not pass with this file skipped
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("jupytext and nbformat are not installed: pip install -e '.[test]'", allow_module_level=True)

SOURCE = REPO_ROOT / "notebooks" / "learners_path.py"
EXECUTED = REPO_ROOT / "notebooks" / "learners_path.ipynb"
KERNEL = "seq2seq-learners-path"  # a kernelspec written for the test: this interpreter, whatever else is installed

#: runs the source's code cells in order in this process (no kernel); on the first exception prints the section it
#: happened in (the last ``## `` heading before it) and the exception, and exits 1
CELL_RUNNER = """
import sys, traceback, jupytext
section = "(before any section)"
namespace = {"__name__": "__main__"}
for number, cell in enumerate(jupytext.read(sys.argv[1]).cells):
    if cell.cell_type == "markdown":
        section = next((line for line in cell.source.splitlines() if line.startswith("## ")), section)
        continue
    try:
        exec(compile(cell.source, f"cell {number}", "exec"), namespace)
    except Exception:
        print("FAILED IN:", section)
        traceback.print_exc(file=sys.stdout)
        sys.exit(1)
print("RAN TO THE END")
"""


def cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def out_of_sync(source_text: str, executed) -> list[str]:
    """How the executed notebook differs from the source's cells (empty when in sync)."""
    source = jupytext.reads(source_text, fmt="py:percent")
    problems = []
    want, have = cells(source), cells(executed)
    if len(want) != len(have):
        problems.append(f"{len(want)} cells in the source, {len(have)} in the .ipynb")
    problems += [f"cell {number} differs: {have_cell[1][:60]!r}" for number, (want_cell, have_cell)
                 in enumerate(zip(want, have)) if want_cell != have_cell]
    return problems


def test_the_executed_copy_holds_the_sources_cells_run_with_their_figures():
    executed = nbformat.read(EXECUTED, as_version=4)
    assert out_of_sync(SOURCE.read_text(encoding="utf-8"), executed) == [], (
        "notebooks/learners_path.ipynb is not the source's cells: rebuild it from the repository root with "
        "the command in the notebook's first cell")
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), "not run top to bottom once"
    outputs = [output for cell in code for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    figures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(figures) >= 3  # the toy loss, the training curve, the attention heatmap


def test_a_changed_cell_is_out_of_sync():
    executed = nbformat.read(EXECUTED, as_version=4)
    planted = SOURCE.read_text(encoding="utf-8").replace("c_next = f * c + i * g", "c_next = f * c - i * g", 1)
    assert out_of_sync(planted, executed) and not out_of_sync(SOURCE.read_text(encoding="utf-8"), executed)


@pytest.fixture
def tiny_run(tiny_corpus, tmp_path, monkeypatch) -> None:
    """The environment the notebook reads: the tiny corpus, a tiny model, 20 steps, one thread, this checkout."""
    monkeypatch.setenv("NOTEBOOK_DATA", str(tiny_corpus))
    monkeypatch.setenv("NOTEBOOK_OUT", str(tmp_path / "run"))
    monkeypatch.setenv("NOTEBOOK_STEPS", "20")
    monkeypatch.setenv("NOTEBOOK_OVERRIDES", " ".join([
        f"data.cache_dir={tmp_path / 'cache'}", "tokenizer.vocab_size=400", "model.emb_size=32",
        "model.encoder_hidden_size=32", "model.decoder_hidden_size=48", "train.max_tokens=1200",
        "train.valid_bleu_sentences=20", "train.threads=1", "train.log_every=5"]))
    for name in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PYTHONPATH"):
        monkeypatch.setenv(name, SUBPROCESS_ENV[name])


def test_the_notebook_runs_top_to_bottom_in_a_kernel(tiny_run, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    kernel_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "seq2seq test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    notebook = jupytext.read(SOURCE)
    # a failing cell raises nbclient's CellExecutionError, which shows the cell and its traceback
    NotebookClient(notebook, timeout=600, kernel_name=KERNEL,
                   resources={"metadata": {"path": str(REPO_ROOT / "notebooks")}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    printed = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "the hand-written beam search finds the same n-best on the trained model" in printed
    assert sum("image/png" in output.get("data", {}) for output in outputs) >= 3


#: (file, the line as it is, the planted line, the section whose check must fail)
PLANTS = {
    "a gate sign in the LSTM cell": (
        "seq2seq/cells.py", "c_next = f * c + i * g", "c_next = f * c - i * g",
        "## 1. One LSTM step and one GRU step, by hand"),
    "the attention softmax over the wrong axis": (
        "seq2seq/attention.py", "weights = torch.softmax(scores, dim=-1)", "weights = torch.softmax(scores, dim=-2)",
        "## 4. One attention step by hand: Bahdanau and Luong"),
    "beam search not re-ranking by the summed score": (
        "seq2seq/decoding/topk.py", "candidates = (self.beam_scores.view(-1, 1) + log_probs)",
        "candidates = (self.beam_scores.view(-1, 1).where(self.beam_scores.view(-1, 1).isinf(), 0.0) + log_probs)",
        "## 6. Greedy and beam search, by hand"),
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_a_planted_bug_stops_the_notebook_at_its_check(plant, tmp_path):
    path, line, planted_line, section = PLANTS[plant]
    shutil.copytree(REPO_ROOT / "seq2seq", tmp_path / "seq2seq", ignore=shutil.ignore_patterns("__pycache__"))
    text = (tmp_path / path).read_text(encoding="utf-8")
    assert text.count(line) == 1, f"{path} no longer has the line to plant the bug in: {line!r}"
    (tmp_path / path).write_text(text.replace(line, planted_line), encoding="utf-8")
    # run in the copy: the notebook imports the package of the directory it finds itself in
    env = {**SUBPROCESS_ENV, "PYTHONPATH": str(tmp_path), "MPLBACKEND": "Agg"}
    run = subprocess.run([sys.executable, "-c", CELL_RUNNER, str(SOURCE)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and f"FAILED IN: {section}\n" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    assert "AssertionError" in run.stdout  # a check caught it, not a crash
