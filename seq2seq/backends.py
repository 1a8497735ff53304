"""The models a :class:`~seq2seq.translator.Translator` decodes with: one model directory or an ensemble of them, on a
device, optionally int8-quantized or run on onnxruntime.

Every choice a caller can get wrong (an ensemble whose tokenizers differ, int8 on a GPU, an unknown backend or
quantization, ``threads`` < 1) is one ValueError saying what to use instead. One rule for choices that conflict
(:func:`check_choices`): int8 and the onnx backend compute in fp32 on the CPU, so asking either for another device
or another dtype (``dtype`` given and not ``fp32``), or both together, is refused, never quietly overridden.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from seq2seq.checkpoint import load_model_dir
from seq2seq.config import Config, apply_overrides
from seq2seq.hub import resolve_model_dir
from seq2seq.precision import resolve_device
from seq2seq.quantize import quantize_int8
from seq2seq.tokenizer import Tokenizer


def check_choices(backend: str, quantize: str | None, dtype: str | None, device: str) -> None:
    """The backend and quantization asked for, and whether the other choices fit them (the module docstring's rule);
    the device is checked again once resolved (``auto`` may become a GPU)."""
    if backend not in ("torch", "onnx"):
        raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    if quantize not in (None, "none", "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    fixed = [what for what, on in (("backend='onnx' (--backend onnx)", backend == "onnx"),
                                   ("quantize='int8' (--quantize int8)", quantize == "int8")) if on]
    if not fixed:
        return
    if len(fixed) == 2:
        raise ValueError(f"{fixed[0]} and {fixed[1]} do not combine: the onnx graphs are fp32; choose one")
    if dtype not in (None, "fp32"):
        raise ValueError(f"{fixed[0]} runs fp32 on the CPU: dtype={dtype!r} (--dtype {dtype}) cannot apply; "
                         "leave it out or give fp32")
    if device not in ("auto", "cpu"):
        raise ValueError(f"{fixed[0]} runs fp32 on the CPU: use device='cpu' (--device cpu), not {device!r}")


def load_decoding_models(
    model_dir: str | Path | Sequence[str | Path], device: str = "auto", quantize: str | None = None,
    dtype: str | None = None, threads: int | None = None, backend: str = "torch",
) -> tuple[Config, list, Tokenizer, Tokenizer, torch.device]:
    """``(cfg, models, src_tokenizer, tgt_tokenizer, device)`` for :meth:`seq2seq.translator.Translator.load` (which
    documents the arguments): the first directory's config (with ``dtype`` applied) and tokenizers, and one model
    per directory, all sharing those tokenizers."""
    model_dirs = [model_dir] if isinstance(model_dir, (str, Path)) else list(model_dir)
    if not model_dirs:
        raise ValueError("no model directory given")
    model_dirs = [resolve_model_dir(location) for location in model_dirs]  # hf:ORG/NAME -> its cached snapshot
    check_choices(backend, quantize, dtype, str(device))
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))

    resolved = resolve_device("cpu" if backend == "onnx" and device == "auto" else device)
    cfg, model, src_tok, tgt_tok = load_model_dir(model_dirs[0], resolved)
    models = [model]
    for other in model_dirs[1:]:
        _, other_model, other_src, other_tgt = load_model_dir(other, resolved)
        for side, ours, theirs in (("source", src_tok, other_src), ("target", tgt_tok, other_tgt)):
            if ours.model_bytes != theirs.model_bytes:
                raise ValueError(f"cannot ensemble {model_dirs[0]} and {other}: their {side} tokenizers differ "
                                 "(an ensemble needs models trained with the same tokenizer files)")
        models.append(other_model)
    if dtype is not None:
        apply_overrides(cfg, [f"decode.dtype={dtype}"])  # ConfigError (a ValueError) lists the choices
    if quantize == "int8":
        cfg.decode.dtype = "fp32"  # int8 kernels replace the GEMMs; no autocast on top
        if resolved.type != "cpu":
            raise ValueError("quantize='int8' runs on the CPU only; use device='cpu'")
        models = [quantize_int8(m) for m in models]
    if backend == "onnx":
        from seq2seq.onnx_runtime import load_onnx_model

        if resolved.type != "cpu":
            raise ValueError("backend='onnx' runs fp32 on the CPU: use device='cpu'")
        cfg.decode.dtype = "fp32"
        from seq2seq.onnx_export import weights_digest

        models = [load_onnx_model(Path(d) / "onnx", cfg.model.rnn_type, threads, weights_sha256=weights_digest(m))
                  for d, m in zip(model_dirs, models)]
    return cfg, models, src_tok, tgt_tok, resolved
