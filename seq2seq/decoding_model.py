"""The interface every search decodes through, declared once: what :class:`seq2seq.decoding.ensemble.Ensemble`
calls on each of its members.

Three kinds of model implement it: the torch :class:`~seq2seq.model.Seq2Seq` (its :class:`~seq2seq.decoder.AttnDecoder`,
also int8-quantized), the onnxruntime :class:`~seq2seq.onnx_runtime.OnnxSeq2Seq`, and the scripted models of the
search tests. A model encodes a batch once; its decoder starts from the encoding and steps one target position for
N rows (hypotheses); states and memories are values with ``select`` (keep or reorder rows) and memories also with
``repeat_interleave`` / ``for_beams``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class StepDecoder(Protocol):
    """A decoder that search steps one position at a time."""

    #: whether :meth:`step` reads a memory whose rows serve groups of consecutive hypotheses
    #: (:meth:`seq2seq.decoder.Memory.for_beams`: a sentence's beams share its row); False: one row per hypothesis
    reads_shared_memory: bool

    def start(self, encoded: Any) -> tuple[Any, Any]:
        """The model's encoding of B sentences -> the initial state and the attention memory of B rows."""
        ...

    def step(self, prev_tokens: Tensor, state: Any, memory: Any) -> tuple[Tensor, Any, Tensor]:
        """(N,) previous ids, N rows of state and memory -> logits (N, V), the new state, attention (N, S)."""
        ...


@runtime_checkable
class DecodingModel(Protocol):
    """A model search decodes with: ``encode`` a batch, then its ``decoder`` starts and steps."""

    decoder: StepDecoder

    def encode(self, src: Tensor, src_lengths: Tensor) -> Any:
        """(B, S) ids and (B,) lengths -> the encoding its decoder starts from."""
        ...

    def eval(self) -> "DecodingModel":
        """Inference mode (no dropout); returns the model."""
        ...
