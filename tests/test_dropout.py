"""seq2seq/dropout.py: the mask's rate in every 16-bit lane, the scale, the gradient, determinism under a seed, and
identity where dropout is off. Expected rates are binomial: a count within 5 standard deviations of n p."""

import math

import pytest
import torch

from seq2seq.dropout import Dropout, dropout, keep_mask

N = 400_003  # not a multiple of four: the last word is cut


def assert_binomial(count: int, n: int, p: float) -> None:
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(count - n * p) < 5 * sigma, f"{count} of {n}, expected {n * p:.0f} +- {5 * sigma:.0f}"


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.7])
def test_every_lane_drops_at_the_rate_and_the_rest_are_scaled(p):
    torch.manual_seed(0)
    x = torch.ones(N)
    y = dropout(x, p, training=True)
    dropped = y == 0
    assert_binomial(int(dropped.sum()), N, p)
    for lane in range(4):  # each 16-bit slice of a 64-bit word on its own (a biased top bit would show here)
        assert_binomial(int(dropped[lane::4].sum()), len(dropped[lane::4]), p)
    kept = y[~dropped]
    rounded_keep = 1 - round(p * 2**16) / 2**16
    assert torch.equal(kept, torch.full_like(kept, 1 / rounded_keep))  # exactly the rounded keep rate
    assert abs(1 / rounded_keep - 1 / (1 - p)) < 1e-4


def test_the_mask_is_independent_of_position():
    """Neighbouring elements (the four draws of one word) are not correlated: pairs both dropped occur at p^2."""
    torch.manual_seed(1)
    dropped = ~keep_mask(torch.Size([N]), 0.5, torch.device("cpu"))
    both = dropped[:-1] & dropped[1:]
    assert_binomial(int(both.sum()), N - 1, 0.25)


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(2)
    x = torch.randn(3, 5, 7, requires_grad=True)
    y = dropout(x, 0.3, training=True)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, (y / x).detach())  # y = x * mask * scale, elementwise


def test_same_seed_same_mask_and_successive_draws_differ():
    x = torch.ones(2, 50, 16)
    torch.manual_seed(3)
    first, second = dropout(x, 0.2, True), dropout(x, 0.2, True)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.2, True), first)
    assert not torch.equal(first, second)


def test_identity_in_eval_at_zero_and_all_dropped_at_one():
    x = torch.randn(4, 6)
    module = Dropout(0.4).eval()
    assert module(x) is x and dropout(x, 0.0, True) is x
    assert torch.count_nonzero(dropout(x, 1.0, True)) == 0
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)


def test_keeps_the_dtype_and_the_shape_of_a_non_contiguous_input():
    torch.manual_seed(4)
    x = torch.ones(8, 12, dtype=torch.bfloat16).t()
    y = dropout(x, 0.2, True)
    assert y.dtype == torch.bfloat16 and y.shape == (12, 8)
    assert set(y.unique().tolist()) == {0.0, 1.25}
