"""Compute dtypes: their names, their autocast dtypes, the CUDA numerics switches each one sets, and the device.
Which dtype ``auto`` resolves to is measured by :mod:`seq2seq.dtype_auto`, one layer up."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from seq2seq.config import DTYPES, ConfigError

#: the config's compute dtypes less ``auto`` (:data:`seq2seq.config.DTYPES`), most exact / safest first: ties go to
#: the earlier one
PRECISION_ORDER = tuple(name for name in DTYPES if name != "auto")
#: autocast dtype per name (None: no autocast). ``tf32`` is fp32 storage with TF32 matmuls on CUDA.
AUTOCAST = {name: {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name) for name in PRECISION_ORDER}


@dataclass(frozen=True)
class ComputeDtypes:
    """A training run's resolved compute dtypes, by name (``fp32`` | ``tf32`` | ``bf16`` | ``fp16``): training's
    and validation decoding's."""

    train: str
    decode: str

    @property
    def train_amp(self) -> torch.dtype | None:
        return AUTOCAST[self.train]

    @property
    def decode_amp(self) -> torch.dtype | None:
        return AUTOCAST[self.decode]


def explicit_autocast(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a named compute dtype on ``device`` (None = no autocast). On CUDA it also sets the
    process's TF32 switches (:func:`apply_numerics`): ``tf32`` turns them on, every other dtype off."""
    if name not in AUTOCAST:
        raise ConfigError(f"unknown compute dtype {name!r}; choose one of auto, {', '.join(AUTOCAST)}")
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("dtype fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if device.type == "cuda":
        apply_numerics(name)
    return AUTOCAST[name]


def apply_numerics(name: str) -> None:
    """Set the process-wide TF32 switches of CUDA matmuls and cuDNN (its fused RNNs) for compute dtype ``name``:
    on for ``tf32``, off for every other, so that ``fp32`` means fp32 (torch turns cuDNN's TF32 on by default).
    They only affect CUDA kernels; training sets them on every rank, whatever the device."""
    torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
    torch.backends.cudnn.allow_tf32 = name == "tf32"


def numerics_flags() -> dict[str, bool]:
    """The TF32 switches this process runs with (reported by every training rank)."""
    return {"matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32}


@contextlib.contextmanager
def numerics(name: str) -> Iterator[None]:
    """:func:`apply_numerics` for ``name`` within the block; the previous switches afterwards."""
    previous = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    apply_numerics(name)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    return device
