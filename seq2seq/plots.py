"""Plots: training curves and attention heatmaps. matplotlib is imported only when plotting."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cannot_write(path: str | Path) -> str | None:
    """Why a plot could not be written to ``path`` (its directory missing or read-only, a directory in its
    place), or None when it can be."""
    path = Path(path).expanduser()
    parent = path.resolve().parent
    if path.is_dir():
        return f"{path} is a directory"
    if not parent.is_dir():
        return f"the directory {parent} does not exist"
    if not os.access(parent, os.W_OK):
        return f"the directory {parent} is not writable"
    return None


def plot_curves(log_path: str | Path, out_path: str | Path) -> None:
    """Training loss and validation BLEU against steps and minutes, from ``train_log.jsonl``."""
    records = [json.loads(line) for line in Path(log_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in records if r.get("type") == "train"]
    valid = [r for r in records if r.get("type") == "valid"]
    if not train and not valid:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for col, (x_key, x_label) in enumerate((("step", "step"), ("elapsed_min", "minutes"))):
        axes[0, col].plot([r[x_key] for r in train], [r["loss"] for r in train], color="tab:blue")
        axes[0, col].set_ylabel("training loss (per target token)")
        axes[1, col].plot([r[x_key] for r in valid], [r["val_bleu"] for r in valid], marker="o", color="tab:green")
        axes[1, col].set_ylabel("validation BLEU (greedy)")
        axes[1, col].set_xlabel(x_label)
        for row in (0, 1):
            axes[row, col].grid(alpha=0.3)
    fig.suptitle("seq2seq training")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def plot_attention(
    attentions: Sequence, src_pieces: Sequence[Sequence[str]], tgt_pieces: Sequence[Sequence[str]], out_path: str | Path
) -> None:
    """One heatmap per sentence (source pieces on x, target pieces on y), stacked vertically in one PNG."""
    plt = _pyplot()
    count = len(attentions)
    fig, axes = plt.subplots(count, 1, figsize=(max(4, 0.45 * max(len(s) for s in src_pieces) + 2),
                                                  sum(max(2.0, 0.4 * len(t) + 1.2) for t in tgt_pieces)), squeeze=False)
    for ax, weights, src, tgt in zip(axes[:, 0], attentions, src_pieces, tgt_pieces):
        ax.imshow(weights.numpy() if hasattr(weights, "numpy") else weights, cmap="viridis", aspect="auto", vmin=0, vmax=1)
        ax.set_xticks(range(len(src)), labels=list(src), rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(tgt)), labels=list(tgt), fontsize=8)
        ax.set_xlabel("source pieces")
        ax.set_ylabel("target pieces")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
