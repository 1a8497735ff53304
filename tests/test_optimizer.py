"""Learning-rate schedules (budget-aware annealing included) and the weight average, against hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from seq2seq.config import ConfigError, TrainConfig, load_config
from seq2seq.training.optimizer import LRSchedule, WeightAverage, budget_progress, build_optimizer, estimated_total_steps


def schedule(**train_keys) -> LRSchedule:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return LRSchedule(optimizer, TrainConfig(**train_keys))


def test_budget_progress_counts_whichever_budget_runs_out_first():
    assert budget_progress(50, 10.0, max_steps=200, max_minutes=0) == 0.25
    assert budget_progress(50, 90.0, max_steps=0, max_minutes=3) == 0.5            # 90 s of 180 s
    assert budget_progress(50, 90.0, max_steps=100, max_minutes=6) == 0.5           # steps: 0.5, time: 0.25
    assert budget_progress(50, 300.0, max_steps=100, max_minutes=2) == 1.0          # clamped
    assert budget_progress(50, 300.0, max_steps=0, max_minutes=0) == 0.0            # no budget
    assert estimated_total_steps(300, 0.25) == 1200 and estimated_total_steps(0, 0.0) is None


def test_linear_and_cosine_anneal_to_min_lr_at_the_end_of_the_budget():
    linear = schedule(scheduler="linear", lr=0.002, min_lr=0.0002, max_steps=100, warmup_steps=0)
    # lr = min + (base - min) * (1 - p): hand-computed at p = 0, 0.25, 0.5, 1
    assert [linear.lr_at(10, p) for p in (0.0, 0.25, 0.5, 1.0)] == pytest.approx([0.002, 0.00155, 0.0011, 0.0002])
    cosine = schedule(scheduler="cosine", lr=0.002, min_lr=0.0, max_steps=100, warmup_steps=0)
    # lr = base * (1 + cos(pi p)) / 2: 0.002, 0.002 * (1 + 0.7071) / 2, 0.001, 0
    assert [cosine.lr_at(10, p) for p in (0.0, 0.25, 0.5, 1.0)] == pytest.approx([0.002, 0.0017071, 0.001, 0.0], abs=1e-7)
    assert linear.lr_at(10, 1.7) == pytest.approx(0.0002)  # past the budget: stays at the minimum


def test_warmup_scales_the_budget_schedules():
    linear = schedule(scheduler="linear", lr=0.001, min_lr=0.0, warmup_steps=4, max_steps=100)
    # step 0 of 4 warmup steps: factor 1/4; progress 0.01 -> 0.001 * 0.99 / 4
    assert linear.lr_at(0, 0.01) == pytest.approx(0.0002475)
    assert linear.lr_at(3, 0.04) == pytest.approx(0.00096)
    assert linear.step(3, 0.04) == pytest.approx(0.00096)
    assert linear.optimizer.param_groups[0]["lr"] == pytest.approx(0.00096)


def test_a_budget_schedule_without_a_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="train.scheduler = linear.*max_minutes"):
        load_config(None, ["train.scheduler=linear", "train.max_minutes=0"])
    with pytest.raises(ConfigError, match="train.max_epochs alone"):  # epochs, and so no time limit
        load_config(None, ["train.max_epochs=3"])
    assert load_config(None, ["train.max_epochs=3", "train.scheduler=plateau"]).train.max_minutes == 0
    assert load_config(None, ["train.scheduler=cosine", "train.max_minutes=20"]).train.scheduler == "cosine"
    with pytest.raises(ConfigError, match="train.ema_decay"):
        load_config(None, ["train.ema_decay=1.0"])


def test_weight_average_follows_the_textbook_recursion():
    model = torch.nn.Linear(1, 1, bias=False)
    values = [2.0, 4.0, -1.0, 3.0]
    with torch.no_grad():
        model.weight.fill_(values[0])
    average = WeightAverage(model, decay=0.5)
    expected = values[0]
    for n, value in enumerate(values[1:], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update(model)
        decay = min(0.5, n / (n + 9))  # 0.1, 2/11, 0.25
        expected = decay * expected + (1 - decay) * value
    # by hand: 0.1*2 + 0.9*4 = 3.8; (2/11)*3.8 + (9/11)*(-1) = -0.1273; 0.25*(-0.1273) + 0.75*3 = 2.2182
    assert expected == pytest.approx(2.21818, abs=1e-4)
    assert average.state_dict()["weight"].item() == pytest.approx(expected, abs=1e-6)


def test_swapped_in_holds_the_average_and_restores_the_weights_even_after_an_error():
    model = torch.nn.Linear(2, 2)
    average = WeightAverage(model, decay=0.9)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update(model)  # decay 0.1: the average moves 0.9 of the way to the new weights
    moved = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError):
        with average.swapped_in(model):
            for name, tensor in model.state_dict().items():
                assert torch.allclose(tensor, original[name] + 0.9)
            raise RuntimeError("validation failed")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, moved[name])
    assert math.isclose(average.decay, 0.9)


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_adam_follows_the_textbook_update(kind):
    """Kingma and Ba's update (AdamW: Loshchilov and Hutter's decoupled decay), written out, over five steps."""
    cfg = TrainConfig(optimizer=kind, lr=0.01, betas=[0.8, 0.9], weight_decay=0.1)
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(7, 3))
    optimizer = build_optimizer(cfg, [param])
    theta, m, v = param.detach().double().clone(), torch.zeros(7, 3).double(), torch.zeros(7, 3).double()
    for t in range(1, 6):
        grad = torch.randn(7, 3)
        param.grad = grad.clone()
        optimizer.step()
        g = grad.double()
        if kind == "adam":
            g = g + 0.1 * theta                      # L2 penalty folded into the gradient
        else:
            theta = theta * (1 - 0.01 * 0.1)         # decoupled weight decay
        m = 0.8 * m + 0.2 * g
        v = 0.9 * v + 0.1 * g * g
        m_hat, v_hat = m / (1 - 0.8 ** t), v / (1 - 0.9 ** t)
        theta = theta - 0.01 * m_hat / (v_hat.sqrt() + 1e-8)
        assert torch.allclose(param.detach().double(), theta, atol=1e-6), t
