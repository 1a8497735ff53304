"""Optimizer and learning-rate schedule (warmup + plateau decay, inverse square root, constant)."""

from __future__ import annotations

import math
from typing import Any

import torch

from seq2seq.config import TrainConfig


def build_optimizer(cfg: TrainConfig, parameters) -> torch.optim.Optimizer:
    """Adam or AdamW over ``parameters`` with ``cfg.lr``, ``cfg.betas``, ``cfg.weight_decay``."""
    optimizer_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(parameters, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


class LRSchedule:
    """Sets the learning rate of an optimizer every step; plateau decay reacts to validation BLEU.

    - ``constant``: linear warmup to ``lr`` over ``warmup_steps``, then ``lr``.
    - ``inverse_sqrt``: warmup, then ``lr * sqrt(warmup / step)``.
    - ``plateau``: warmup, then ``lr`` scaled by ``plateau_factor`` each time validation BLEU has not
      improved for ``plateau_patience`` validations, never below ``min_lr``.
    """

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

    def lr_at(self, step: int) -> float:
        warmup = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        if self.kind == "inverse_sqrt" and self.warmup_steps > 0 and step >= self.warmup_steps:
            return self.base_lr * math.sqrt(self.warmup_steps / (step + 1))
        if self.kind == "inverse_sqrt" and self.warmup_steps == 0:
            return self.base_lr / math.sqrt(step + 1)
        return max(self.base_lr * warmup * self.scale, min(self.min_lr, self.base_lr * warmup))

    def step(self, step: int) -> float:
        """Set the learning rate for optimizer step ``step`` (0-based) and return it."""
        lr = self.lr_at(step)
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
