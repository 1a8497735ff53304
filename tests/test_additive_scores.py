"""The chunked additive attention score (seq2seq/additive_scores.py) against the textbook ``tanh`` formula:
values and gradients (torch's autograd through ``tanh``, and numerical differentiation), for chunks of target
positions and chunks of batch rows, one head and several, and under bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from seq2seq.additive_scores import ChunkedAdditiveScores, additive_scores, chunks


def inputs(batch, steps, length, size, heads, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, steps, size, dtype=dtype, generator=generator).requires_grad_()
    k = torch.randn(batch, length, size, dtype=dtype, generator=generator).requires_grad_()
    V = (torch.randn(size, heads, dtype=dtype, generator=generator) / size**0.5).requires_grad_()
    return q, k, V


def textbook(q, k, V):
    """scores[b, t, s, h] = sum_a tanh(q[b, t, a] + k[b, s, a]) V[a, h], one (b, t, s) at a time."""
    batch, steps, _ = q.shape
    rows = [[[torch.tanh(q[b, t] + k[b, s]) @ V for s in range(k.size(1))] for t in range(steps)] for b in range(batch)]
    return torch.stack([torch.stack([torch.stack(row) for row in step]) for step in rows])


@pytest.mark.parametrize("budget", [1, 3 * 5 * 8, 7 * 5 * 8, 2 * 7 * 5 * 8, 10**6],
                         ids=["one-pair", "3-positions", "one-row", "2-rows", "one-chunk"])
def test_chunks_cover_every_row_and_position_once(budget):
    batch, steps, slab = 4, 7, 5 * 8
    seen = torch.zeros(batch, steps, dtype=torch.long)
    for rows, positions in chunks(batch, steps, slab, budget):
        seen[rows, positions] += 1
        assert seen[rows, positions].numel() * slab <= max(budget, slab)
    assert torch.equal(seen, torch.ones(batch, steps, dtype=torch.long))


@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("budget", [3 * 5 * 8, 2 * 4 * 5 * 8, 10**6], ids=["positions", "rows", "one-chunk"])
def test_values_and_gradients_match_the_textbook_formula(heads, budget):
    """Chunks of 3 positions of one row, every position of 2 rows, or all at once: every layout gives the
    formula's values and the gradients autograd takes through ``tanh`` (fp64, so to rounding)."""
    q, k, V = inputs(batch=3, steps=4, length=5, size=8, heads=heads)
    scores = additive_scores(q, k, V, budget=budget)
    expected = textbook(q, k, V)
    torch.testing.assert_close(scores, expected, atol=1e-12, rtol=0)
    grad = torch.randn_like(scores)
    got = torch.autograd.grad(scores, (q, k, V), grad)
    want = torch.autograd.grad(expected, (q, k, V), grad)
    for name, a, b in zip("qkV", got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0, msg=f"d{name}")


def test_gradients_pass_a_numerical_check():
    q, k, V = inputs(batch=2, steps=3, length=4, size=6, heads=2)
    assert torch.autograd.gradcheck(lambda q, k, V: ChunkedAdditiveScores.apply(q, k, V, 2 * 4 * 6), (q, k, V))


@pytest.mark.parametrize("steps", [6, 1], ids=["training", "a decoding step"])
def test_fp32_matches_the_formula_and_bf16_autocast_computes_inside_in_fp32(steps):
    q, k, V = inputs(batch=4, steps=steps, length=7, size=32, heads=1, dtype=torch.float32)
    expected = textbook(q.double(), k.double(), V.double())
    torch.testing.assert_close(additive_scores(q, k, V, budget=2 * 7 * 32).double(), expected, atol=1e-5, rtol=0)
    qb, kb = q.bfloat16(), k.bfloat16()  # what autocast hands over: bf16 projections, the fp32 parameter
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = additive_scores(qb, kb, V, budget=2 * 7 * 32)
    assert scores.dtype == torch.bfloat16
    rounded_inputs = textbook(qb.double(), kb.double(), V.double())  # the only rounding is the inputs' and the result's
    torch.testing.assert_close(scores.double(), rounded_inputs, atol=1e-6, rtol=2**-8)  # half a bf16 step


def test_bf16_autocast_gradients_match_the_formula_at_the_rounded_inputs():
    """Training under bf16 autocast: the gradients reaching the bf16 projections and the fp32 energy vector are the
    fp64 formula's at the bf16-rounded inputs and incoming gradient, to within a bf16 step of their scale (the
    backward pass works in fp32 and rounds only the results it hands back)."""
    q, k, V = inputs(batch=3, steps=5, length=6, size=16, heads=2, dtype=torch.float32)
    qb = q.detach().bfloat16().requires_grad_()
    kb = k.detach().bfloat16().requires_grad_()
    Vf = V.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = additive_scores(qb, kb, Vf, budget=2 * 6 * 16)
    grad = torch.randn(scores.shape, generator=torch.Generator().manual_seed(1)).bfloat16()
    got = torch.autograd.grad(scores, (qb, kb, Vf), grad)
    assert [g.dtype for g in got] == [torch.bfloat16, torch.bfloat16, torch.float32]
    q64, k64, V64 = (x.detach().double().requires_grad_() for x in (qb, kb, Vf))
    want = torch.autograd.grad(textbook(q64, k64, V64), (q64, k64, V64), grad.double())
    for name, a, b in zip("qkV", got, want):
        scale = float(b.abs().max())
        torch.testing.assert_close(a.double(), b, atol=2**-8 * scale, rtol=2**-8, msg=f"d{name}")
