"""Dynamic int8 quantization of a model's linear layers, for CPU inference (``Translator.load(quantize="int8")``)."""

from __future__ import annotations

import warnings

import torch


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of the linear layers (CPU inference), all but the additive attention's energy
    vector ``v`` (a 1-output layer, read as a weight by seq2seq/additive_scores.py: there is nothing to save)."""
    quantize_dynamic = getattr(getattr(torch.ao, "quantization", None), "quantize_dynamic", None)
    if quantize_dynamic is None:
        raise ValueError(f"quantize='int8' needs torch.ao.quantization.quantize_dynamic, which torch "
                         f"{torch.__version__} does not have; translate without --quantize")
    with warnings.catch_warnings():  # torch marks its eager-mode quantization as deprecated
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        linear = {name for name, module in model.named_modules()
                  if isinstance(module, torch.nn.Linear) and not name.endswith("energy_layer")}
        return quantize_dynamic(model, linear, dtype=torch.qint8)
