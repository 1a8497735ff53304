"""What a search returns: :class:`Hypothesis`; what it records of each step when traced: :class:`TraceStep`; and
the id clean-up every search applies to its outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from seq2seq.tokenizer import EOS_ID, PAD_ID

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class Hypothesis:
    """One decoded hypothesis.

    Attributes:
        tokens: target ids without BOS/EOS.
        score: length-normalized log-probability (GNMT penalty; raw sum when alpha = 0).
        attention: (len(tokens) + 1, S) attention weights per generated position (EOS included) or None: a
            torch tensor, or a numpy array from the runtime without torch (:mod:`seq2seq.decoding.numpy_search`).
    """

    tokens: list[int]
    score: float
    attention: Optional[Any] = field(default=None, repr=False)


@dataclass(frozen=True)
class TraceStep:
    """One step of a traced search (CPU tensors; B sentences, K kept hypotheses each, C candidates each): what the
    service's page draws (seq2seq/serving/schema.py ``beam_steps``).

    Attributes:
        tokens: (B, K, t + 1) the hypotheses kept after the step (PAD where a row holds none).
        scores: (B, K) their summed log-probabilities (-inf: no hypothesis kept in that slot).
        candidate_tokens: (B, C, t + 1) candidates ending at this step: the top 2K of plain beam search, the
            piece chosen by greedy search, the hypotheses that ended here in constrained search.
        finishing: (B, C) which of them joined the finished hypotheses.
        candidate_scores: (B, C) their length-normalized scores.
        done: (B,) whether the sentence's search is over.
    """

    tokens: Tensor
    scores: Tensor
    candidate_tokens: Tensor
    finishing: Tensor
    candidate_scores: Tensor
    done: Tensor


def strip_ids(tokens: list[int]) -> list[int]:
    """Ids up to (not including) the first EOS, without padding."""
    out = []
    for token in tokens:
        if token == EOS_ID:
            break
        if token != PAD_ID:
            out.append(token)
    return out
