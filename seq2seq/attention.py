"""Attention over the encoder outputs: Bahdanau (additive/MLP) and Luong (dot, general).

Both are stateless: :meth:`precompute_keys` turns the encoder outputs into keys once per batch and
returns them; the decoder keeps them in its memory value and passes them to every step. Queries may
be one step (B, D) or many steps at once (B, T, D) (the parallel training path).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Attention(nn.Module):
    """Base: subclasses define ``precompute_keys`` and ``score``."""

    def precompute_keys(self, memory: Tensor) -> Tensor:
        """(B, S, memory_size) encoder outputs -> (B, S, key_size) keys."""
        raise NotImplementedError

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """(B, T, query_size) queries, (B, S, key_size) keys -> (B, T, S) unnormalized scores."""
        raise NotImplementedError

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, pad_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Attend.

        Args:
            query: (B, query_size) or (B, T, query_size) decoder states.
            keys: (B, S, key_size) from :meth:`precompute_keys`.
            memory: (B, S, memory_size) encoder outputs (the values).
            pad_mask: (B, S) True at padded source positions.

        Returns:
            context: (B, memory_size) or (B, T, memory_size), weighted sum of the memory.
            weights: (B, S) or (B, T, S), attention distribution (zero on padding).
        """
        single_step = query.dim() == 2
        if single_step:
            query = query.unsqueeze(1)
        scores = self.score(query, keys)  # (B, T, S)
        scores = scores.masked_fill(pad_mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        context = torch.bmm(weights, memory)  # (B, T, memory_size)
        if single_step:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights


class BahdanauAttention(Attention):
    """Additive attention: ``score(q, k) = v^T tanh(W_q q + W_k k)``.

    Args:
        query_size: decoder state size.
        memory_size: encoder output size.
        hidden_size: size of the MLP layer (defaults to ``query_size``).
    """

    def __init__(self, query_size: int, memory_size: int, hidden_size: int | None = None) -> None:
        super().__init__()
        hidden_size = hidden_size or query_size
        self.key_layer = nn.Linear(memory_size, hidden_size, bias=False)
        self.query_layer = nn.Linear(query_size, hidden_size, bias=False)
        self.energy_layer = nn.Linear(hidden_size, 1, bias=False)

    def precompute_keys(self, memory: Tensor) -> Tensor:
        return self.key_layer(memory)  # (B, S, A)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        projected_query = self.query_layer(query)  # (B, T, A)
        energy = torch.tanh(projected_query.unsqueeze(2) + keys.unsqueeze(1))  # (B, T, S, A)
        return self.energy_layer(energy).squeeze(-1)  # (B, T, S)


class LuongAttention(Attention):
    """Multiplicative attention: ``dot``: ``q^T k``; ``general``: ``q^T W k``.

    For ``general`` the keys are ``W k`` (computed once per batch). ``dot`` needs
    ``query_size == memory_size``.
    """

    def __init__(self, query_size: int, memory_size: int, score: str = "general") -> None:
        super().__init__()
        if score not in ("dot", "general"):
            raise ValueError(f"Luong score must be 'dot' or 'general', got {score!r}")
        if score == "dot" and query_size != memory_size:
            raise ValueError(f"dot attention needs query_size == memory_size, got {query_size} and {memory_size}")
        self.key_layer = nn.Linear(memory_size, query_size, bias=False) if score == "general" else None

    def precompute_keys(self, memory: Tensor) -> Tensor:
        return self.key_layer(memory) if self.key_layer is not None else memory  # (B, S, query_size)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(query, keys.transpose(1, 2))  # (B, T, S)


def build_attention(kind: str, query_size: int, memory_size: int) -> Attention:
    """``bahdanau`` | ``luong_dot`` | ``luong_general``."""
    if kind == "bahdanau":
        return BahdanauAttention(query_size, memory_size)
    if kind in ("luong_dot", "luong_general"):
        return LuongAttention(query_size, memory_size, score=kind.split("_", 1)[1])
    raise ValueError(f"unknown attention {kind!r}; choose bahdanau, luong_dot or luong_general")
