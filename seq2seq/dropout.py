"""Dropout whose mask is cheap to draw on the CPU.

torch's CPU dropout draws its mask with ``bernoulli_``, which on CPUs other than Intel's runs one element at a time
through the generator: about 8 ns an element on this project's AMD hosts, 5% of a training step of the CPU recipe
(docs/profile.md, "Dropout masks from 16-bit draws"). Here the mask comes from 64-bit random words cut into four
16-bit draws, one generator call per four elements: an element is dropped when its draw falls in the lowest
``round(p * 2^16)`` of the 2^16 values. So the drop probability is ``p`` rounded to a multiple of 2^-16 (0.2
becomes 0.199997), and the kept elements are scaled by one over the rounded keep probability: the expected output
equals the input.

The draws come from torch's default generator (seeded by ``torch.manual_seed``, saved and restored with a
checkpoint's RNG state), so training stays reproducible and resumable. On other devices (CUDA's fused kernel) and
for ``p`` that rounds to 1 this is torch's own dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: draws per 64-bit random word, and the values one draw takes
DRAWS_PER_WORD = 4
DRAW_VALUES = 2**16


def drop_threshold(p: float) -> int:
    """The number of the 2^16 draw values that drop an element: ``p`` rounded to a multiple of 2^-16."""
    return round(p * DRAW_VALUES)


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> Tensor:
    """A bool tensor of ``shape``: True (keep) with probability ``1 - drop_threshold(p) / 2^16``, independently."""
    count = shape.numel()
    words = torch.empty(-(-count // DRAWS_PER_WORD), dtype=torch.int64, device=device)
    words.random_(-(2**63), None)  # the whole 64-bit range: every one of the four 16-bit slices is uniform
    draws = words.view(torch.int16)[:count].view(shape)  # uniform over [-2^15, 2^15)
    return draws >= drop_threshold(p) - DRAW_VALUES // 2


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``x`` with each element zeroed with probability ``p`` (rounded, see the module docstring) and the rest
    scaled to keep the expectation, in training; ``x`` itself otherwise. Any shape; the result has ``x``'s dtype."""
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu" or drop_threshold(p) >= DRAW_VALUES:
        return F.dropout(x, p, training)
    keep = 1.0 - drop_threshold(p) / DRAW_VALUES
    scale = keep_mask(x.shape, p, x.device).to(x.dtype).mul_(1.0 / keep)
    return x * scale


class Dropout(nn.Module):
    """:func:`dropout` as a module: ``nn.Dropout``'s drop-in (same argument, no parameters or buffers)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
