"""Dynamic int8 quantization of a model's linear layers, for CPU inference (``Translator.load(quantize="int8")``)."""

from __future__ import annotations

import warnings

import torch


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of the linear layers (CPU inference)."""
    quantize_dynamic = getattr(getattr(torch.ao, "quantization", None), "quantize_dynamic", None)
    if quantize_dynamic is None:
        raise ValueError(f"quantize='int8' needs torch.ao.quantization.quantize_dynamic, which torch "
                         f"{torch.__version__} does not have; translate without --quantize")
    with warnings.catch_warnings():  # torch marks its eager-mode quantization as deprecated
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
