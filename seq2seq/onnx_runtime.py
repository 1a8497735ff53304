"""A model whose encoder and decoder step run in onnxruntime, behind the interface every search mode calls.

:class:`OnnxSeq2Seq` is a :class:`~seq2seq.decoding_model.DecodingModel`, as a Seq2Seq is: ``encode(src,
src_lengths)``, ``decoder.start(encoded)`` and ``decoder.step(prev_tokens, state, memory)``; its states and memories
are the torch :class:`~seq2seq.decoder.DecoderState` / :class:`~seq2seq.decoder.Memory` (CPU tensors that share
memory with onnxruntime's numpy arrays), so beam search reorders them with ``select`` as it does for torch. Greedy,
beam, sampling, constrained search and forced scoring therefore run unchanged. The graphs come from
:func:`seq2seq.onnx_export.export_onnx`; ``onnxruntime`` is an optional extra (``pip install 'seq2seq[onnx]'``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seq2seq.decoder import DecoderState, Memory
from seq2seq.onnx_export import DIGEST_FILE, ENCODER_FILE, MEMORY_NAMES, STEP_FILE, file_digest, state_names


def _numpy(tensor: Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy())


class OnnxDecoder:
    """``start`` / ``step`` of an :class:`~seq2seq.decoder.AttnDecoder`, the step running in onnxruntime: a
    :class:`~seq2seq.decoding_model.StepDecoder`."""

    #: the exported step graph reads one memory row per hypothesis (beam search copies the rows)
    reads_shared_memory = False

    def __init__(self, session, rnn_type: str) -> None:
        self.session = session
        # the exporter drops inputs a graph does not read (attn_vector without input feeding)
        self.input_names = {node.name for node in session.get_inputs()}
        self.rnn_type = rnn_type
        self.lstm = rnn_type == "lstm"

    def start(self, encoded: dict[str, Tensor]) -> tuple[DecoderState, Memory]:
        """The encoder graph's outputs -> initial state and memory (B rows)."""
        return (DecoderState(encoded["hidden"], encoded.get("cell"), encoded["attn_vector"]),
                Memory(encoded["values"], encoded["keys"], encoded["pad_mask"]))

    def step(self, prev_tokens: Tensor, state: DecoderState, memory: Memory) -> tuple[Tensor, DecoderState, Tensor]:
        """(N,) previous ids, N rows of state and memory -> logits (N, V), the new state, attn_weights (N, S)."""
        feeds = {"prev_tokens": _numpy(prev_tokens.long()), "hidden": _numpy(state.hidden),
                 "attn_vector": _numpy(state.attn_vector), "values": _numpy(memory.values),
                 "keys": _numpy(memory.keys), "pad_mask": _numpy(memory.pad_mask)}
        if self.lstm:
            feeds["cell"] = _numpy(state.cell)
        feeds = {name: value for name, value in feeds.items() if name in self.input_names}
        outputs = [torch.from_numpy(out) for out in self.session.run(None, feeds)]
        if self.lstm:
            logits, hidden, cell, attn_vector, attn_weights = outputs
        else:
            (logits, hidden, attn_vector, attn_weights), cell = outputs, None
        return logits, DecoderState(hidden, cell, attn_vector), attn_weights


class OnnxSeq2Seq:
    """Encoder and decoder step in onnxruntime (CPU), used by the searches like a Seq2Seq in eval mode: a
    :class:`~seq2seq.decoding_model.DecodingModel`."""

    def __init__(self, encoder_session, step_session, rnn_type: str) -> None:
        self.encoder_session = encoder_session
        self.decoder = OnnxDecoder(step_session, rnn_type)
        self.output_names = state_names(rnn_type) + MEMORY_NAMES

    def encode(self, src: Tensor, src_lengths: Tensor) -> dict[str, Tensor]:
        """(B, S) ids, (B,) lengths -> the encoder graph's outputs by name (the decoder's start included)."""
        outputs = self.encoder_session.run(None, {"src": _numpy(src.long()), "src_lengths": _numpy(src_lengths.long())})
        return {name: torch.from_numpy(out) for name, out in zip(self.output_names, outputs)}

    def eval(self) -> "OnnxSeq2Seq":
        """Always in inference mode (the graphs were exported from a model in eval mode)."""
        return self


def load_onnx_model(onnx_dir: str | Path, rnn_type: str, threads: int | None = None,
                    weights_sha256: str | None = None) -> OnnxSeq2Seq:
    """Sessions for ``encoder.onnx`` and ``decoder_step.onnx`` in ``onnx_dir`` (CPU execution provider).

    The graphs must be the ones ``exported_from.json`` names (their SHA-256), and, given ``weights_sha256``
    (:func:`seq2seq.onnx_export.weights_digest` of the model directory's weights), exported from those weights:
    otherwise, and for graphs onnxruntime cannot read, one ValueError saying to export again.
    """
    try:
        import onnxruntime
    except ImportError as err:
        raise ValueError(f"the onnx backend needs onnxruntime ({err}); install the extra with "
                         "`pip install 'seq2seq[onnx]'`") from None
    onnx_dir = Path(onnx_dir)
    again = f"export the model again with `python -m seq2seq.onnx_export --model MODEL_DIR --out {onnx_dir}`"
    for name in (ENCODER_FILE, STEP_FILE, DIGEST_FILE):
        if not (onnx_dir / name).is_file():
            raise ValueError(f"{onnx_dir / name} is missing: {again}")
    try:
        recorded = json.loads((onnx_dir / DIGEST_FILE).read_text(encoding="utf-8"))
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{onnx_dir / DIGEST_FILE} is damaged ({err}): {again}") from None
    for name in (ENCODER_FILE, STEP_FILE):
        if file_digest(onnx_dir / name) != recorded.get(name):
            raise ValueError(f"{onnx_dir / name} is not the graph that was exported (damaged or replaced): {again}")
    if weights_sha256 is not None and recorded.get("weights_sha256") != weights_sha256:
        raise ValueError(f"the graphs in {onnx_dir} were exported from other weights than the model's "
                         f"model.safetensors (retrained or replaced since): {again}")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    sessions = []
    for name in (ENCODER_FILE, STEP_FILE):
        try:
            sessions.append(onnxruntime.InferenceSession(str(onnx_dir / name), options,
                                                         providers=["CPUExecutionProvider"]))
        except Exception as err:  # onnxruntime's own InvalidProtobuf / Fail / InvalidGraph
            first_line = (str(err).strip().splitlines() or [""])[0][:200]
            raise ValueError(f"onnxruntime cannot load {onnx_dir / name} ({type(err).__name__}: {first_line}): "
                             f"{again}") from None
    return OnnxSeq2Seq(sessions[0], sessions[1], rnn_type)
