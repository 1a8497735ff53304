"""The models a :class:`~seq2seq.translator.Translator` decodes with: one model directory or an ensemble of them, on a
device, optionally int8-quantized or run on onnxruntime.

Every choice a caller can get wrong (an ensemble whose tokenizers differ, int8 on a GPU, an unknown backend or
quantization, ``threads`` < 1) is one ValueError saying what to use instead.
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
    elif quantize not in (None, "none"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    if backend == "onnx":
        from seq2seq.onnx_runtime import load_onnx_model

        if resolved.type != "cpu" or quantize == "int8":
            raise ValueError("backend='onnx' runs fp32 on the CPU: use device='cpu' and no quantize")
        cfg.decode.dtype = "fp32"
        models = [load_onnx_model(Path(d) / "onnx", cfg.model.rnn_type, threads) for d in model_dirs]
    elif backend != "torch":
        raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    return cfg, models, src_tok, tgt_tok, resolved
