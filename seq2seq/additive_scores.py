"""The additive (Bahdanau) attention score, computed on the CPU in cache-sized chunks.

    scores[b, t, s, h] = sum_a tanh(q[b, t, a] + k[b, s, a]) * V[a, h]

``q`` are the projected queries ``W_q h_t``, ``k`` the keys ``W_k m_s``, ``V`` (A, H) the energy vectors (one
column for one head; the block-diagonal matrix of the heads' ``v_h`` for several). Written plainly, the
``tanh`` tensor is (B, T, S, A): for a training batch of 2,048 positions about 60 MB in fp32, twice a server
CPU's L3 cache, written, read and kept for the backward pass. And torch's CPU ``tanh`` is slow: on the Zen 4
hosts of this project it runs at a sixth of ``sigmoid``'s speed (docs/profile.md). So, on the CPU:

- ``tanh(x) = 2 sigmoid(2x) - 1``, and the ``- 1`` folds into the sum: ``scores = 2 sigmoid(2q + 2k) V - sum_a V``;
- the (chunk, S, A) slab is computed for a few batch rows (or target positions of one row) at a time, small enough
  to stay in cache, and never kept: the backward pass recomputes it chunk by chunk (as activation checkpointing does);
- the work is done in fp32 whatever the autocast dtype (the (B, T, A) queries are cast, the (B, S, A) keys chunk
  by chunk), so bf16 rounds the inputs and nothing inside.

The gradients, with ``sg = sigmoid(2q + 2k)`` and ``g`` the incoming gradient (B, T, S, H)::

    dV   = sum_{b,t,s} (2 sg - 1) g^T                       (A, H)
    du   = (g V^T) * 4 sg (1 - sg)                          (B, T, S, A), since tanh' = 1 - tanh^2
    dq   = sum_s du        dk = sum_t du

:func:`additive_scores` uses the chunked function on the CPU and the plain formula elsewhere (a GPU's memory
bandwidth makes the plain tensor cheap) and under ONNX export (whose graph must not unroll the chunk loop).
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 20  # elements of one (chunk, S, A) slab: 4 MiB in fp32, well inside L3 (the fastest of 2^18-2^21)


def plain_additive_scores(q: Tensor, k: Tensor, V: Tensor) -> Tensor:
    """The textbook formula: (B, T, A), (B, S, A), (A, H) -> (B, T, S, H)."""
    return torch.tanh(q.unsqueeze(2) + k.unsqueeze(1)) @ V.to(q.dtype)


def chunks(batch: int, steps: int, slab: int, budget: int) -> list[tuple[slice, slice]]:
    """(batch rows, target positions) of each chunk, so that a chunk holds about ``budget`` elements when one
    (row, position) pair holds ``slab``: every position of a few rows, or (when one row's positions hold more)
    a few positions of one row. Rows first: a row's keys then stay in cache for all its positions, and the keys'
    gradient of a row is summed over them in one chunk instead of added to every row's in every chunk."""
    per_row = steps * slab
    if per_row <= budget:
        rows = max(1, budget // per_row)
        return [(slice(b, b + rows), slice(0, steps)) for b in range(0, batch, rows)]
    width = max(1, budget // slab)
    return [(slice(b, b + 1), slice(t, t + width)) for b in range(batch) for t in range(0, steps, width)]


def _sigmoid_slab(q2: Tensor, k: Tensor, rows: slice, steps: slice) -> Tensor:
    """sigmoid(2q + 2k) for one chunk: (b, t, S, A) in q2's dtype, with q2 = 2q."""
    return torch.add(q2[rows, steps].unsqueeze(2), k[rows].to(q2.dtype).unsqueeze(1), alpha=2).sigmoid_()


class ChunkedAdditiveScores(torch.autograd.Function):
    """scores (B, T, S, H) from q (B, T, A) and V (A, H) of the working dtype (fp32 or fp64) and k (B, S, A) of
    that dtype or a narrower one; ``budget``: elements of one chunk's slab. See the module docstring."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, V: Tensor, budget: int) -> Tensor:
        with torch.autocast(q.device.type, enabled=False):
            q2 = q * 2
            batch, steps, size = q.shape
            scores = q.new_empty(batch, steps, k.size(1), V.size(1))
            V2 = V * 2
            for rows, positions in chunks(batch, steps, k.size(1) * size, budget):
                scores[rows, positions] = _sigmoid_slab(q2, k, rows, positions) @ V2
            scores -= V.sum(0)
        ctx.save_for_backward(q, k, V)
        ctx.budget = budget
        return scores

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        q, k, V = ctx.saved_tensors
        with torch.autocast(q.device.type, enabled=False):
            grad = grad.to(q.dtype)
            q2 = q * 2
            batch, steps, size = q.shape
            heads = V.size(1)
            dq, dk, dV = torch.empty_like(q), k.new_zeros(k.shape, dtype=q.dtype), torch.zeros_like(V)
            V4 = V.T * 4  # (H, A)
            for rows, positions in chunks(batch, steps, k.size(1) * size, budget=ctx.budget):
                sg = _sigmoid_slab(q2, k, rows, positions)  # (b, t, S, A)
                g = grad[rows, positions]  # (b, t, S, H)
                dV += sg.flatten(0, 2).T @ g.flatten(0, 2)
                sg.sub_(sg * sg)  # sg (1 - sg)
                if heads == 1:
                    sg.mul_(g).mul_(V4[0])
                else:
                    sg.mul_(g @ V4)
                dq[rows, positions] = sg.sum(2)
                dk[rows] += sg.sum(1)
            dV.mul_(2).sub_(grad.sum((0, 1, 2)))
        return dq, dk.to(k.dtype), dV, None


def additive_scores(q: Tensor, k: Tensor, V: Tensor, budget: int | None = None) -> Tensor:
    """``sum_a tanh(q + k) V``: q (B, T, A), k (B, S, A), V (A, H) -> (B, T, S, H), in q's dtype.

    On the CPU the chunked fp32 computation (``budget`` elements a chunk, default :data:`CHUNK_ELEMENTS`);
    elsewhere, and while traced (the TorchScript ONNX exporter traces), the plain formula. ``torch.jit.is_tracing``
    and not ``torch.onnx.is_in_onnx_export``: the latter's first call imports torch.onnx and torch._dynamo (about
    1.6 s of a translator's cold start)."""
    if q.device.type != "cpu" or torch.jit.is_tracing():
        return plain_additive_scores(q, k, V)
    work = torch.promote_types(q.dtype, torch.float32)  # fp32, or fp64 for a gradient check
    scores = ChunkedAdditiveScores.apply(q.to(work), k, V.to(work), budget or CHUNK_ELEMENTS)
    return scores.to(q.dtype)
