"""Optimizer, learning-rate schedule and weight averaging.

Schedules (``train.scheduler``), each after a linear warmup over ``train.warmup_steps``:

- ``linear`` / ``cosine``: budget-aware annealing to ``min_lr`` exactly at the end of the training budget
  (``train.max_steps`` and/or ``train.max_minutes``; Li, Yumer and Ramanan, *Budgeted Training*, ICLR 2020).
  The trainer passes the fraction of the budget used so far; under a time budget that fraction is the step
  count over the total number of steps the budget will allow, re-estimated every step from the measured
  mean step time (validation included).
- ``plateau``: ``lr`` scaled by ``plateau_factor`` each time validation BLEU has not improved for
  ``plateau_patience`` validations, never below ``min_lr``.
- ``inverse_sqrt``: ``lr * sqrt(warmup / step)``; ``constant``: ``lr``.

:class:`WeightAverage` keeps an exponential moving average of the weights (Polyak averaging) that the
trainer validates beside the raw weights; it costs nothing at decode time.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch

from seq2seq.config import TrainConfig

BUDGET_SCHEDULES = ("linear", "cosine")


def build_optimizer(cfg: TrainConfig, parameters) -> torch.optim.Optimizer:
    """Adam or AdamW over ``parameters`` with ``cfg.lr``, ``cfg.betas``, ``cfg.weight_decay``."""
    optimizer_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(parameters, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def budget_progress(step: int, elapsed_seconds: float, max_steps: int, max_minutes: float) -> float:
    """Fraction of the training budget used after ``step`` optimizer steps and ``elapsed_seconds``, in [0, 1].

    With a time budget the total number of steps is estimated as ``step * budget / elapsed`` (the steps done
    plus the remaining time over the mean step time so far), so the fraction is ``step / estimate`` =
    ``elapsed / budget``. With both budgets, whichever runs out first counts. 0 when there is no budget.
    """
    fractions = [0.0]
    if max_steps > 0:
        fractions.append(step / max_steps)
    if max_minutes > 0:
        fractions.append(elapsed_seconds / (max_minutes * 60.0))
    return min(1.0, max(fractions))


def estimated_total_steps(step: int, progress: float) -> int | None:
    """The number of steps the budget allows, estimated from the progress so far (None before any progress)."""
    return round(step / progress) if progress > 0 and step > 0 else None


class LRSchedule:
    """Sets the learning rate of an optimizer every step; plateau decay reacts to validation BLEU."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
        self.optimizer = optimizer
        self.kind = cfg.scheduler
        self.base_lr = cfg.lr
        self.warmup_steps = cfg.warmup_steps
        self.factor = cfg.plateau_factor
        self.patience = cfg.plateau_patience
        self.min_lr = cfg.min_lr
        self.scale = 1.0  # plateau decay so far
        self.best_metric = -math.inf
        self.bad_validations = 0
        self.step(0)

    def lr_at(self, step: int, progress: float = 0.0) -> float:
        """The learning rate of optimizer step ``step`` (0-based) with ``progress`` of the budget used."""
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if self.kind in BUDGET_SCHEDULES:
            progress = min(max(progress, 0.0), 1.0)
            remaining = 1.0 - progress if self.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
            return warmup * (self.min_lr + (self.base_lr - self.min_lr) * remaining)
        if self.kind == "inverse_sqrt" and self.warmup_steps > 0 and step >= self.warmup_steps:
            return self.base_lr * math.sqrt(self.warmup_steps / (step + 1))
        if self.kind == "inverse_sqrt" and self.warmup_steps == 0:
            return self.base_lr / math.sqrt(step + 1)
        return max(self.base_lr * warmup * self.scale, min(self.min_lr, self.base_lr * warmup))

    def step(self, step: int, progress: float = 0.0) -> float:
        """Set the learning rate for optimizer step ``step`` (0-based) and return it."""
        lr = self.lr_at(step, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def on_validation(self, metric: float) -> None:
        """Record a validation score (higher is better); decays the plateau schedule when it stalls."""
        if metric > self.best_metric:
            self.best_metric = metric
            self.bad_validations = 0
            return
        self.bad_validations += 1
        if self.kind == "plateau" and self.bad_validations >= self.patience:
            self.scale = max(self.scale * self.factor, self.min_lr / self.base_lr)
            self.bad_validations = 0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "best_metric": self.best_metric, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.best_metric = float(state["best_metric"])
        self.bad_validations = int(state["bad_validations"])


class WeightAverage:
    """Exponential moving average of a model's floating-point weights, kept in fp32 beside the model.

    After update ``n`` (1-based) the average is ``avg = d_n * avg + (1 - d_n) * weights`` with
    ``d_n = min(decay, n / (n + 9))``: early on the average follows the weights closely (a plain average of
    few steps), later it is the usual EMA with time constant ``1 / (1 - decay)`` steps.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        state = model.state_dict()
        self.names = [name for name, p in state.items() if p.is_floating_point()]
        self.averages = [state[name].detach().float().clone() for name in self.names]

    def _tensors(self, model: torch.nn.Module) -> list[torch.Tensor]:
        state = model.state_dict()
        return [state[name] for name in self.names]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold the model's current weights into the average (call after each optimizer step)."""
        self.updates += 1
        decay = min(self.decay, self.updates / (self.updates + 9.0))
        weights = [w.float() if w.dtype != torch.float32 else w for w in self._tensors(model)]
        torch._foreach_lerp_(self.averages, weights, 1.0 - decay)

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module) -> Iterator[None]:
        """Within the block the model holds the averaged weights; its own weights are restored afterwards."""
        tensors = self._tensors(model)
        with torch.no_grad():
            saved = [t.detach().clone() for t in tensors]
            for tensor, average in zip(tensors, self.averages):
                tensor.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for tensor, original in zip(tensors, saved):
                    tensor.copy_(original)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights by parameter name (the update count travels in the trainer state)."""
        return dict(zip(self.names, self.averages))

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        missing = [name for name in self.names if name not in state]
        if missing:
            raise KeyError(f"weight average lacks {missing[:3]}")
        self.averages = [state[name].float().to(avg.device) for name, avg in zip(self.names, self.averages)]
        self.updates = updates
