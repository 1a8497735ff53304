"""Attention over the encoder outputs: Bahdanau (additive/MLP) and Luong (dot, general), one head or several.

All are stateless: :meth:`precompute_keys` turns the encoder outputs into keys once per batch and
returns them (and :meth:`project_values` the values); the decoder keeps them in its memory value and passes
them to every step. Queries may be one step (B, D) or many steps at once (B, T, D) (the parallel training path).

With ``heads`` > 1 (multi-head attention as in RNMT+, Chen et al. 2018, arXiv 1804.09849, after Vaswani et al.
2017): the keys and the query are split into ``heads`` parts, each head scores every source position on its own
part and takes its own softmax, and reads its own part of the values (the encoder outputs projected once per
batch); the heads' contexts are concatenated. The weights returned (for alignments and plots) are the heads'
mean.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seq2seq.additive_scores import additive_scores


class Attention(nn.Module):
    """Base: subclasses define ``precompute_keys`` and ``score``.

    Args:
        heads: attention heads (1 = classic attention); the value projection exists only for several heads.
        memory_size: encoder output size, which ``heads`` must divide.
    """

    def __init__(self, heads: int = 1, memory_size: int = 0) -> None:
        super().__init__()
        if heads < 1:
            raise ValueError(f"model.attention_heads must be >= 1, got {heads}")
        if memory_size % heads:
            raise ValueError(f"model.attention_heads {heads} must divide the encoder output size {memory_size}")
        self.heads = heads
        self.value_layer = nn.Linear(memory_size, memory_size, bias=False) if heads > 1 else None

    def precompute_keys(self, memory: Tensor) -> Tensor:
        """(B, S, memory_size) encoder outputs -> (B, S, key_size) keys."""
        raise NotImplementedError

    def project_values(self, memory: Tensor) -> Tensor:
        """(B, S, memory_size) encoder outputs -> (B, S, memory_size) values (the outputs as they are for one head)."""
        return self.value_layer(memory) if self.value_layer is not None else memory

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        """(B, T, query_size) queries, (B, S, key_size) keys -> (B, heads, T, S) unnormalized scores."""
        raise NotImplementedError

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, heads, L, D / heads)."""
        batch, length, size = x.shape
        return x.view(batch, length, self.heads, size // self.heads).transpose(1, 2)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, pad_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Attend.

        Args:
            query: (B, query_size) or (B, T, query_size) decoder states.
            keys: (B, S, key_size) from :meth:`precompute_keys`.
            memory: (B, S, memory_size) the values, from :meth:`project_values`.
            pad_mask: (B, S) True at padded source positions.

        Returns:
            context: (B, memory_size) or (B, T, memory_size), weighted sum of the memory.
            weights: (B, S) or (B, T, S), attention distribution (zero on padding).
        """
        single_step = query.dim() == 2
        if single_step:
            query = query.unsqueeze(1)
        scores = self.score(query, keys)  # (B, heads, T, S)
        scores = scores.masked_fill(pad_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if self.heads == 1:
            weights = weights.squeeze(1)  # (B, T, S)
            context = torch.bmm(weights, memory)  # (B, T, memory_size)
        else:
            context = torch.matmul(weights, self.split_heads(memory))  # (B, heads, T, memory_size / heads)
            context = context.transpose(1, 2).flatten(2)  # (B, T, memory_size)
            weights = weights.mean(dim=1)  # (B, T, S)
        if single_step:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights


class BahdanauAttention(Attention):
    """Additive attention: ``score(q, k) = v^T tanh(W_q q + W_k k)``; per head ``v_h^T tanh(W_q q + W_k k)_h``.

    Args:
        query_size: decoder state size.
        memory_size: encoder output size.
        hidden_size: size of the MLP layer (defaults to ``query_size``; ``heads`` must divide it).
        heads: attention heads; head ``h`` sums its own slice of the MLP layer with its own vector ``v_h``.
    """

    def __init__(self, query_size: int, memory_size: int, hidden_size: int | None = None, heads: int = 1) -> None:
        super().__init__(heads, memory_size)
        hidden_size = hidden_size or query_size
        if hidden_size % heads:
            raise ValueError(f"model.attention_heads {heads} must divide the attention size {hidden_size}")
        self.key_layer = nn.Linear(memory_size, hidden_size, bias=False)
        self.query_layer = nn.Linear(query_size, hidden_size, bias=False)
        if heads == 1:
            self.energy_layer = nn.Linear(hidden_size, 1, bias=False)
        else:  # v_h for every head, (heads, hidden_size / heads)
            self.energy = nn.Parameter(torch.empty(heads, hidden_size // heads))
            nn.init.uniform_(self.energy, -(heads / hidden_size) ** 0.5, (heads / hidden_size) ** 0.5)

    def precompute_keys(self, memory: Tensor) -> Tensor:
        return self.key_layer(memory)  # (B, S, A)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        projected_query = self.query_layer(query)  # (B, T, A)
        if self.heads == 1:
            per_head = self.energy_layer.weight.T  # (A, 1)
        else:  # head h sums its slice of the A units with v_h: the block-diagonal (A, heads) matrix of the v_h
            per_head = block_columns(self.energy)  # (A, heads)
        return additive_scores(projected_query, keys, per_head).permute(0, 3, 1, 2)  # (B, heads, T, S)


def block_columns(vectors: Tensor) -> Tensor:
    """(heads, D) -> (heads * D, heads): column h holds ``vectors[h]`` in rows ``h*D : (h+1)*D``, zeros elsewhere
    (``torch.block_diag(*vectors.unsqueeze(1)).T``, written with ops every ONNX opset exports)."""
    heads, size = vectors.shape
    blocks = torch.eye(heads, dtype=vectors.dtype, device=vectors.device).repeat_interleave(size, dim=0)
    return blocks * vectors.reshape(-1, 1)


class LuongAttention(Attention):
    """Multiplicative attention: ``dot``: ``q^T k``; ``general``: ``q^T W k``; per head on the heads' slices.

    For ``general`` the keys are ``W k`` (computed once per batch). ``dot`` needs
    ``query_size == memory_size``. With several heads, ``heads`` must divide ``query_size``.
    """

    def __init__(self, query_size: int, memory_size: int, score: str = "general", heads: int = 1) -> None:
        super().__init__(heads, memory_size)
        if score not in ("dot", "general"):
            raise ValueError(f"Luong score must be 'dot' or 'general', got {score!r}")
        if score == "dot" and query_size != memory_size:
            raise ValueError(f"dot attention needs query_size == memory_size, got {query_size} and {memory_size}")
        if query_size % heads:
            raise ValueError(f"model.attention_heads {heads} must divide the decoder hidden size {query_size}")
        self.key_layer = nn.Linear(memory_size, query_size, bias=False) if score == "general" else None

    def precompute_keys(self, memory: Tensor) -> Tensor:
        return self.key_layer(memory) if self.key_layer is not None else memory  # (B, S, query_size)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        if self.heads == 1:
            return torch.bmm(query, keys.transpose(1, 2)).unsqueeze(1)  # (B, 1, T, S)
        return torch.matmul(self.split_heads(query), self.split_heads(keys).transpose(2, 3))  # (B, heads, T, S)


def build_attention(kind: str, query_size: int, memory_size: int, heads: int = 1) -> Attention:
    """``bahdanau`` | ``luong_dot`` | ``luong_general``, with ``heads`` heads."""
    if kind == "bahdanau":
        return BahdanauAttention(query_size, memory_size, heads=heads)
    if kind in ("luong_dot", "luong_general"):
        return LuongAttention(query_size, memory_size, score=kind.split("_", 1)[1], heads=heads)
    raise ValueError(f"unknown attention {kind!r}; choose bahdanau, luong_dot or luong_general")
