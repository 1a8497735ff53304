"""The tiny training recipe and readers of what a run directory holds (its log, its weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import safetensors.torch
import torch
from conftest import REPO_ROOT, TINY_OVERRIDES

from seq2seq.config import load_config

RECIPE = REPO_ROOT / "configs" / "multi30k_en_de.yaml"


def tiny_config(corpus: Path, cache: Path, *overrides: str, test_splits: str = "[]"):
    return load_config(RECIPE, [
        f"data.path={corpus}", f"data.cache_dir={cache}", f"data.test_splits={test_splits}",
        *TINY_OVERRIDES, *overrides,
    ])


def train_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def losses_by_step(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in train_records(run_dir) if r["type"] == "train"}


def assert_same_weights(path_a: Path, path_b: Path) -> None:
    a, b = safetensors.torch.load_file(str(path_a)), safetensors.torch.load_file(str(path_b))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs between {path_a} and {path_b}"


def reuse_tokenizers(source_run: Path, out: Path) -> None:
    """Copy trained tokenizers into a fresh run directory (train() loads them instead of training again)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.src.model", "tokenizer.tgt.model"):
        shutil.copy(source_run / name, out / name)
