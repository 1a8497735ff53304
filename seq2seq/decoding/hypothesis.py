"""What a search returns: :class:`Hypothesis`, and the id clean-up every search applies to its outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from torch import Tensor

from seq2seq.tokenizer import EOS_ID, PAD_ID


@dataclass
class Hypothesis:
    """One decoded hypothesis.

    Attributes:
        tokens: target ids without BOS/EOS.
        score: length-normalized log-probability (GNMT penalty; raw sum when alpha = 0).
        attention: (len(tokens) + 1, S) attention weights per generated position (EOS included) or None.
    """

    tokens: list[int]
    score: float
    attention: Optional[Tensor] = field(default=None, repr=False)


def strip_ids(tokens: list[int]) -> list[int]:
    """Ids up to (not including) the first EOS, without padding."""
    out = []
    for token in tokens:
        if token == EOS_ID:
            break
        if token != PAD_ID:
            out.append(token)
    return out
