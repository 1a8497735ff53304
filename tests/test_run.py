"""A training run's parts (:mod:`seq2seq.training.run`): its one clock, and the gradient scaler's state in the
training state."""

from __future__ import annotations

import json
import time

import torch

from seq2seq.training.run import TrainingClock, restore_scaler


def test_the_clock_reads_the_folded_seconds_until_the_first_agreement():
    """Before the first step of a segment every rank reads the seconds saved by the segments before it (the same
    number on every rank), not its own clock: the first step's learning rate under a time budget is the same on
    every rank. Afterwards it reads what the step's agreement said (rank 0's clock)."""
    clock = TrainingClock()
    clock.restart(90.0)
    time.sleep(0.01)
    assert clock.seconds() == 90.0 and clock.local_seconds() >= 90.01
    clock.agreed = 93.5
    assert clock.seconds() == 93.5
    assert clock.fold() >= 90.01 and clock.seconds() == 93.5  # folding for a save does not move the shared reading


def _scaler_after_an_overflow() -> torch.amp.GradScaler:
    """A CPU gradient scaler (the state is the same on CUDA) after steps that grew and then backed off its scale."""
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=2)
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    for value in (1.0, 1.0, 1.0, float("inf")):  # two good steps grow the scale, one more, then an overflow
        optimizer.zero_grad()
        scaler.scale((weight * value).sum()).backward()
        scaler.step(optimizer)
        scaler.update()
    return scaler


def test_the_gradient_scaler_state_round_trips_through_the_saved_json(tmp_path):
    trained = _scaler_after_an_overflow()
    assert trained.get_scale() == 1024.0  # 1024 -> 2048 after two good steps -> 1024 after the overflow
    saved = json.loads(json.dumps({"scaler": trained.state_dict()}))  # state.json holds it as JSON
    fresh = torch.amp.GradScaler("cpu", init_scale=65536.0, growth_interval=2)
    restore_scaler(fresh, saved, tmp_path / "state.json")
    assert fresh.state_dict() == trained.state_dict()
    assert fresh.get_scale() == 1024.0 and fresh._get_growth_tracker() == 0
