"""Export a model to ONNX as two graphs: the encoder (with the decoder's start) and one decoder step.

``encoder.onnx``  ``src (B, S) int64, src_lengths (B,) int64`` -> the decoder's initial ``hidden (L, B, H)``,
                  [``cell (L, B, H)``, LSTM only], ``attn_vector (B, A)``, and the attention memory ``values (B, S, M)``,
                  ``keys (B, S, K)``, ``pad_mask (B, S) bool``: :meth:`AttnDecoder.start` after the encoder.
``decoder_step.onnx``  ``prev_tokens (N,) int64``, the state and the memory of N rows -> ``logits (N, V)``, the new
                  state, ``attn_weights (N, S)``: :meth:`AttnDecoder.step`.

Every search mode loops over steps in Python and reorders the state between them, so exporting these two graphs
(and not a whole search) keeps greedy, beam, sampling, constrained search and scoring unchanged: they run on
:class:`seq2seq.onnx_runtime.OnnxSeq2Seq`, which has the model's ``encode`` / ``decoder.start`` / ``decoder.step``.

``exported_from.json`` ties the two graphs to the weights they came from: the SHA-256 of the model's tensors
(:func:`weights_digest`) and of each graph file, checked when the graphs are loaded (a retrained model, or a damaged
graph, is refused with a message instead of translating as the old weights did). The export writes into a staging
directory beside ``out_dir`` and swaps it in only once every file is written: a failed export leaves nothing
half written (a previous export stays as it was).

The TorchScript exporter (``dynamo=False``) is used on purpose: the dynamo exporter freezes the time axis of
bidirectional recurrences (pytorch#191855), writes nn.GRU with the wrong ``linear_before_reset`` (pytorch#189225),
and torch.export fails on RNNs with a dynamic length (pytorch#126339). The TorchScript exporter turns the packed
bidirectional encoder into ONNX LSTM/GRU nodes with ``sequence_lens``, dynamic in batch and source length.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from seq2seq.cells import ReferenceRNN
from seq2seq.decoder import DecoderState, Memory
from seq2seq.model import Seq2Seq
from seq2seq.onnx_graphs import DIGEST_FILE, ENCODER_FILE, MEMORY_NAMES, STEP_FILE, file_digest, state_names  # noqa: F401
from seq2seq.tokenizer import BOS_ID

#: ONNX opset of the exported graphs (onnxruntime >= 1.14 runs it)
OPSET = 17


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the model's fp32 tensors (names, shapes and bytes, in name order): what the graphs compute with."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu", torch.float32 if tensor.is_floating_point() else tensor.dtype).contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype};".encode())
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


class EncoderGraph(nn.Module):
    """``(src, src_lengths)`` -> initial state tensors + memory tensors (see the module docstring)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, ...]:
        state, memory = self.model.decoder.start(self.model.encode(src, src_lengths))
        cell = (state.cell,) if state.cell is not None else ()
        return (state.hidden, *cell, state.attn_vector, memory.values, memory.keys, memory.pad_mask)


class StepGraph(nn.Module):
    """``(prev_tokens, *state, *memory)`` -> ``(logits, *new state, attn_weights)``."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model
        self.lstm = model.decoder.rnn_type == "lstm"

    def forward(self, prev_tokens: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
        if self.lstm:
            hidden, cell, attn_vector, values, keys, pad_mask = tensors
        else:
            (hidden, attn_vector, values, keys, pad_mask), cell = tensors, None
        logits, state, attn_weights = self.model.decoder.step(
            prev_tokens, DecoderState(hidden, cell, attn_vector), Memory(values, keys, pad_mask))
        new_cell = (state.cell,) if self.lstm else ()
        return (logits, state.hidden, *new_cell, state.attn_vector, attn_weights)


def _axes(names: list[str], rows: str) -> dict[str, dict[int, str]]:
    """Dynamic axes of state/memory tensors: rows (batch) everywhere, the source length in the memory."""
    axes = {"hidden": {1: rows}, "cell": {1: rows}, "attn_vector": {0: rows}, "values": {0: rows, 1: "src_len"},
            "keys": {0: rows, 1: "src_len"}, "pad_mask": {0: rows, 1: "src_len"}}
    return {name: axes[name] for name in names}


def export_onnx(model: Seq2Seq, out_dir: str | Path, weights_file: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``encoder.onnx``, ``decoder_step.onnx`` and ``exported_from.json`` for ``model`` (fp32, CPU) into
    ``out_dir`` (replacing what was there, all or nothing); returns the two graphs' paths. ``weights_file``: the
    ``model.safetensors`` the model was loaded from, whose SHA-256 is recorded too (what the runtime without torch
    checks; :func:`seq2seq.onnx_graphs.load_onnx_graphs`).

    Raises ValueError for a model built with ``model.rnn_impl: reference`` (its Python loop over time would be
    traced at one length): rebuild it with ``fused``, which has the same weights; and ValueError naming the
    exporter's error for anything else that cannot be exported (then nothing is written).
    """
    if any(isinstance(m, ReferenceRNN) for m in model.modules()):
        raise ValueError("ONNX export needs model.rnn_impl: fused (the textbook cells of 'reference' loop in Python "
                         "over time); the weights are the same: load the model with rnn_impl fused and export it")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    was_training = model.training
    try:
        model = model.float().cpu().eval()
        with _quiet_stderr():  # the exporter's C++ shape-inference notes (and its graph dump on a failure)
            _export(model, staging)
        digests = {"weights_sha256": weights_digest(model),
                   **{name: file_digest(staging / name) for name in (ENCODER_FILE, STEP_FILE)}}
        if weights_file is not None:
            digests["weights_file_sha256"] = file_digest(Path(weights_file))
        (staging / DIGEST_FILE).write_text(json.dumps(digests, indent=1) + "\n", encoding="utf-8")
        _swap_in(staging, out_dir)
    except Exception as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError):
            raise
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        raise ValueError(f"cannot export this model to ONNX ({type(err).__name__}: {first_line}); nothing was "
                         f"written to {out_dir}") from err
    finally:  # the exporter restores its wrapper's mode on the model; leave it as the caller had it
        model.train(was_training)
    return out_dir / ENCODER_FILE, out_dir / STEP_FILE


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the finished ``staging`` directory (a previous export is removed only after)."""
    old = None
    if out_dir.exists() or out_dir.is_symlink():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to a scratch file while inside (C++ code writes there directly, past sys.stderr)."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to redirect
        yield
        return
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _export(model: Seq2Seq, out_dir: Path) -> None:
    rnn_type = model.decoder.rnn_type
    states = state_names(rnn_type)
    src = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])  # two rows of different lengths: the packed path
    src_lengths = torch.tensor([5, 3])
    encoder_path, step_path = out_dir / ENCODER_FILE, out_dir / STEP_FILE
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            EncoderGraph(model).eval(), (src, src_lengths), str(encoder_path), dynamo=False, opset_version=OPSET,
            input_names=["src", "src_lengths"], output_names=states + MEMORY_NAMES,
            dynamic_axes={"src": {0: "batch", 1: "src_len"}, "src_lengths": {0: "batch"},
                          **_axes(states + MEMORY_NAMES, "batch")})
        start = EncoderGraph(model)(src, src_lengths)
        prev_tokens = torch.full((2,), BOS_ID)
        torch.onnx.export(
            StepGraph(model).eval(), (prev_tokens, *start), str(step_path), dynamo=False, opset_version=OPSET,
            input_names=["prev_tokens"] + states + MEMORY_NAMES,
            output_names=["logits"] + [f"new_{name}" for name in states] + ["attn_weights"],
            dynamic_axes={"prev_tokens": {0: "rows"}, "logits": {0: "rows"}, "attn_weights": {0: "rows", 1: "src_len"},
                          **_axes(states + MEMORY_NAMES, "rows"),
                          **{f"new_{name}": axes for name, axes in _axes(states, "rows").items()}})


def main(argv: list[str] | None = None) -> int:
    """``python -m seq2seq.onnx_export --model DIR [--out DIR/onnx]``."""
    import argparse
    import sys

    from seq2seq.checkpoint import WEIGHTS_FILE, CheckpointError, load_model_dir
    from seq2seq.hub import resolve_model_dir

    parser = argparse.ArgumentParser(prog="python -m seq2seq.onnx_export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory (or hf:ORG/NAME)")
    parser.add_argument("--out", help="where to write the two graphs (default: MODEL/onnx)")
    args = parser.parse_args(argv)
    try:
        model_dir = resolve_model_dir(args.model)
        _, model, _, _ = load_model_dir(model_dir)
        paths = export_onnx(model, args.out or model_dir / "onnx", weights_file=model_dir / WEIGHTS_FILE)
    except (CheckpointError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
