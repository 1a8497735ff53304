"""The models a :class:`~seq2seq.translator.Translator` decodes with: one model directory or an ensemble of them, on a
device, optionally int8-quantized or run on onnxruntime.

Every choice a caller can get wrong (an ensemble whose tokenizers differ, int8 on a GPU, an unknown backend or
quantization, ``threads`` < 1) is one ValueError saying what to use instead. One rule for choices that conflict
(:func:`check_choices`): int8 and the onnx backend compute in fp32 on the CPU, so asking either for another device
or another dtype (``dtype`` given and not ``fp32``), or both together, is refused, never quietly overridden.

The onnx backend loads without torch (:func:`load_onnx_graphs_of`): the config and tokenizers of each model
directory, and its exported graphs checked against the weights file's digest; torch is imported only for graphs
exported before that digest was recorded (their weights are then loaded to be checked; export again to skip it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from seq2seq.checkpoint import WEIGHTS_FILE, load_model_files, model_dir_location
from seq2seq.config import Config, apply_overrides
from seq2seq.hub import resolve_model_dir
from seq2seq.onnx_graphs import OnnxGraphs, load_onnx_graphs, records_weights_file
from seq2seq.tokenizer import Tokenizer

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeDevice:
    """Where the runtime without torch computes (a stand-in for ``torch.device("cpu")``: ``.type``, ``str()``)."""

    type: str = "cpu"

    def __str__(self) -> str:
        return self.type


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
) -> tuple[Config, list, Tokenizer, Tokenizer, "torch.device | RuntimeDevice"]:
    """``(cfg, models, src_tokenizer, tgt_tokenizer, device)`` for :meth:`seq2seq.translator.Translator.load` (which
    documents the arguments): the first directory's config (with ``dtype`` applied) and tokenizers, and one model
    per directory, all sharing those tokenizers. With ``backend="onnx"`` the models are
    :class:`~seq2seq.onnx_graphs.OnnxGraphs` and the device a :class:`RuntimeDevice`, loaded without torch."""
    model_dirs = [model_dir] if isinstance(model_dir, (str, Path)) else list(model_dir)
    if not model_dirs:
        raise ValueError("no model directory given")
    model_dirs = [resolve_model_dir(location) for location in model_dirs]  # hf:ORG/NAME -> its cached snapshot
    check_choices(backend, quantize, dtype, str(device))
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if backend == "onnx":
        loaded = [load_model_files(d) for d in model_dirs]
        cfg, src_tok, tgt_tok = loaded[0]
        check_shared_tokenizers(model_dirs, [(src, tgt) for _, src, tgt in loaded])
        if dtype is not None:
            apply_overrides(cfg, [f"decode.dtype={dtype}"])  # ConfigError (a ValueError) lists the choices
        cfg.decode.dtype = "fp32"
        models = [load_onnx_graphs_of(d, other_cfg.model.rnn_type, threads) for d, (other_cfg, _, _) in
                  zip(model_dirs, loaded)]
        return cfg, models, src_tok, tgt_tok, RuntimeDevice()

    try:
        import torch
    except ImportError:  # the runtime-only install (docs/onnx.md)
        raise ValueError("the torch backend needs torch, which is not installed: install it (pip install torch), "
                         "or translate with backend='onnx' (--backend onnx) a model exported with "
                         "`python -m seq2seq.onnx_export`") from None

    from seq2seq.checkpoint import load_model_dir
    from seq2seq.precision import resolve_device
    from seq2seq.quantize import quantize_int8

    if threads is not None:
        torch.set_num_threads(int(threads))
    resolved = resolve_device(device)
    loaded = [load_model_dir(d, resolved) for d in model_dirs]
    cfg, _, src_tok, tgt_tok = loaded[0]
    check_shared_tokenizers(model_dirs, [(src, tgt) for _, _, src, tgt in loaded])
    models = [model for _, model, _, _ in loaded]
    if dtype is not None:
        apply_overrides(cfg, [f"decode.dtype={dtype}"])  # ConfigError (a ValueError) lists the choices
    if quantize == "int8":
        cfg.decode.dtype = "fp32"  # int8 kernels replace the GEMMs; no autocast on top
        if resolved.type != "cpu":
            raise ValueError("quantize='int8' runs on the CPU only; use device='cpu'")
        models = [quantize_int8(m) for m in models]
    return cfg, models, src_tok, tgt_tok, resolved


def check_shared_tokenizers(model_dirs: list, tokenizers: list[tuple[Tokenizer, Tokenizer]]) -> None:
    """ValueError unless every model directory has the first one's source and target tokenizers (an ensemble)."""
    src_tok, tgt_tok = tokenizers[0]
    for other, (other_src, other_tgt) in zip(model_dirs[1:], tokenizers[1:]):
        for side, ours, theirs in (("source", src_tok, other_src), ("target", tgt_tok, other_tgt)):
            if ours.model_bytes != theirs.model_bytes:
                raise ValueError(f"cannot ensemble {model_dirs[0]} and {other}: their {side} tokenizers differ "
                                 "(an ensemble needs models trained with the same tokenizer files)")


def load_onnx_graphs_of(model_dir: Path, rnn_type: str, threads: int | None) -> OnnxGraphs:
    """``MODEL_DIR/onnx``'s graphs, checked against ``model.safetensors``: by the file's digest, without torch, or
    for graphs exported before that digest was recorded, by loading the weights with torch (said in a warning)."""
    model_dir = model_dir_location(model_dir)
    onnx_dir = model_dir / "onnx"
    if records_weights_file(onnx_dir):
        return load_onnx_graphs(onnx_dir, rnn_type, threads, weights_file=model_dir / WEIGHTS_FILE)
    if not (onnx_dir / "exported_from.json").is_file():  # the graphs' own error: missing, export again
        return load_onnx_graphs(onnx_dir, rnn_type, threads)
    logger.warning("%s was exported before the weights file's digest was recorded: loading the weights with torch "
                   "to check them (export again with `python -m seq2seq.onnx_export --model %s` to load without "
                   "torch)", onnx_dir, model_dir)
    from seq2seq.checkpoint import load_model_dir
    from seq2seq.onnx_export import weights_digest

    _, model, _, _ = load_model_dir(model_dir, "cpu")
    return load_onnx_graphs(onnx_dir, rnn_type, threads, weights_sha256=weights_digest(model))
