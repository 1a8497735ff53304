"""The onnxruntime graphs behind the interface the torch searches call on a model.

:class:`OnnxSeq2Seq` is a :class:`~seq2seq.decoding_model.DecodingModel`, as a Seq2Seq is: ``encode(src,
src_lengths)``, ``decoder.start(encoded)`` and ``decoder.step(prev_tokens, state, memory)``; its states and memories
are the torch :class:`~seq2seq.decoder.DecoderState` / :class:`~seq2seq.decoder.Memory` (CPU tensors that share
memory with onnxruntime's numpy arrays), so beam search reorders them with ``select`` as it does for torch. Greedy,
beam, sampling, constrained search and forced scoring therefore run unchanged on the graphs of
:class:`seq2seq.onnx_graphs.OnnxGraphs`. The runtime without torch (``--backend onnx``) decodes greedy and beam
search in numpy (:mod:`seq2seq.decoding.numpy_search`) and comes here only for the other modes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seq2seq.decoder import DecoderState, Memory
from seq2seq.onnx_graphs import OnnxGraphs, load_onnx_graphs


def _numpy(tensor: Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy())


class OnnxDecoder:
    """``start`` / ``step`` of an :class:`~seq2seq.decoder.AttnDecoder`, the step running in onnxruntime: a
    :class:`~seq2seq.decoding_model.StepDecoder`."""

    #: the exported step graph reads one memory row per hypothesis (beam search copies the rows)
    reads_shared_memory = False

    def __init__(self, graphs: OnnxGraphs) -> None:
        self.graphs = graphs
        self.rnn_type = graphs.rnn_type

    def start(self, encoded: dict[str, Tensor]) -> tuple[DecoderState, Memory]:
        """The encoder graph's outputs -> initial state and memory (B rows)."""
        return (DecoderState(encoded["hidden"], encoded.get("cell"), encoded["attn_vector"]),
                Memory(encoded["values"], encoded["keys"], encoded["pad_mask"]))

    def step(self, prev_tokens: Tensor, state: DecoderState, memory: Memory) -> tuple[Tensor, DecoderState, Tensor]:
        """(N,) previous ids, N rows of state and memory -> logits (N, V), the new state, attn_weights (N, S)."""
        arrays = {"hidden": state.hidden, "cell": state.cell, "attn_vector": state.attn_vector}
        logits, new_state, attn_weights = self.graphs.step(
            _numpy(prev_tokens.long()), {name: _numpy(arrays[name]) for name in self.graphs.state_names},
            {"values": _numpy(memory.values), "keys": _numpy(memory.keys), "pad_mask": _numpy(memory.pad_mask)})
        new_state = {name: torch.from_numpy(value) for name, value in new_state.items()}
        return (torch.from_numpy(logits), DecoderState(new_state["hidden"], new_state.get("cell"),
                                                        new_state["attn_vector"]), torch.from_numpy(attn_weights))


class OnnxSeq2Seq:
    """Encoder and decoder step in onnxruntime (CPU), used by the searches like a Seq2Seq in eval mode: a
    :class:`~seq2seq.decoding_model.DecodingModel`."""

    def __init__(self, graphs: OnnxGraphs) -> None:
        self.graphs = graphs
        self.decoder = OnnxDecoder(graphs)

    def encode(self, src: Tensor, src_lengths: Tensor) -> dict[str, Tensor]:
        """(B, S) ids, (B,) lengths -> the encoder graph's outputs by name (the decoder's start included)."""
        state, memory = self.graphs.encode(_numpy(src.long()), _numpy(src_lengths.long()))
        return {name: torch.from_numpy(value) for name, value in {**state, **memory}.items()}

    def eval(self) -> "OnnxSeq2Seq":
        """Always in inference mode (the graphs were exported from a model in eval mode)."""
        return self


def load_onnx_model(onnx_dir: str | Path, rnn_type: str, threads: int | None = None,
                    weights_sha256: str | None = None) -> OnnxSeq2Seq:
    """:func:`seq2seq.onnx_graphs.load_onnx_graphs` (which checks the graphs and documents the arguments) for the
    torch searches."""
    return OnnxSeq2Seq(load_onnx_graphs(onnx_dir, rnn_type, threads, weights_sha256=weights_sha256))
