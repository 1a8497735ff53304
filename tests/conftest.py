"""Shared fixtures. Tests that need Multi30k skip with a reason when ../shared/data is absent."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
MULTI30K = Path(os.environ.get("SEQ2SEQ_MULTI30K", REPO_ROOT.parent / "shared" / "data" / "multi30k"))


@pytest.fixture
def multi30k_dir() -> Path:
    """The Multi30k directory (``{split}.{lang}.gz``); skips the test when it is not present."""
    if not (MULTI30K / "train.en.gz").is_file():
        pytest.skip(f"Multi30k not found at {MULTI30K} (set SEQ2SEQ_MULTI30K or put ../shared/data beside the repo)")
    return MULTI30K


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    torch.manual_seed(0)
