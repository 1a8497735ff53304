"""A Hugging Face cache laid out as huggingface_hub lays out a downloaded snapshot, for hf:ORG/NAME tests offline."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def add_snapshot(cache: Path, repo_id: str, commit: str, files: dict[str, Path], ref: str | None = None) -> Path:
    """Put ``files`` into ``cache`` as huggingface_hub stores a downloaded snapshot: content-addressed blobs under
    ``models--ORG--NAME/blobs/``, ``snapshots/COMMIT/NAME`` symlinks to them, and ``refs/REF`` holding the commit."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        data = source.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)  # names such as onnx/encoder.onnx
        (snapshot / name).symlink_to(os.path.relpath(blob, (snapshot / name).parent))
    if ref is not None:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return snapshot


def model_files(model_dir: Path) -> dict[str, Path]:
    names = ("config.yaml", "tokenizer.src.model", "tokenizer.tgt.model", "model.safetensors", "results.json")
    return {name: model_dir / name for name in names}
