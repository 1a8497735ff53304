"""The training state a run keeps in ``last/`` for ``--resume``: weights, optimizer, weight average, RNG, the
trainer's own counters.

``last/`` holds ``model.safetensors``, ``optimizer.safetensors`` (the optimizer's tensors; its other state goes to
``state.json``), ``average.safetensors`` (the weight average, when kept) and ``state.json`` (step, epoch,
schedule, RNG, ...). It is replaced as a whole: ``last.tmp/`` is written, then swapped in by two renames, so a
process killed at any moment leaves a complete ``last/`` or ``last.old/``, which
:func:`seq2seq.checkpoint.find_training_state` finds (seq2seq/checkpoint.py describes the rest of a model
directory). Nothing is unpickled; a damaged file is a :class:`~seq2seq.checkpoint.CheckpointError` naming it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from seq2seq.checkpoint import (
    LAST_DIR,
    WEIGHTS_FILE,
    CheckpointError,
    atomic_write,
    atomic_write_text,
    load_state_into,
    load_weights,
    save_weights,
)

AVERAGE_FILE = "average.safetensors"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into flat tensors (safetensors) and JSON-able metadata."""
    state_dict = optimizer.state_dict()
    tensors, meta_state = {}, {}
    for param_id, param_state in state_dict["state"].items():
        meta_state[str(param_id)] = {}
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                meta_state[str(param_id)][key] = value
    return tensors, {"state": meta_state, "param_groups": state_dict["param_groups"]}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state = {int(pid): dict(values) for pid, values in meta["state"].items()}
    for name, tensor in tensors.items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = tensor
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, Any]:
    """Random states of python, torch CPU and CUDA, as JSON-able lists."""
    state = {"python": _jsonable(random.getstate()), "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tupled(state["python"]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def save_training_state(
    run_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, trainer_state: dict[str, Any],
    weight_average: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write ``run_dir/last/`` as a whole: build ``last.tmp/`` then swap it in.

    ``weight_average`` (the trainer's EMA of the weights, by parameter name) goes to ``average.safetensors``.
    """
    run_dir = Path(run_dir)
    final, tmp, old = run_dir / LAST_DIR, run_dir / f"{LAST_DIR}.tmp", run_dir / f"{LAST_DIR}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        save_weights(model.state_dict(), tmp / WEIGHTS_FILE)
        if weight_average is not None:
            save_weights(weight_average, tmp / AVERAGE_FILE)
        opt_tensors, opt_meta = _optimizer_tensors(optimizer)
        atomic_write(tmp / "optimizer.safetensors", lambda p: safetensors.torch.save_file(opt_tensors, str(p)))
        state = dict(trainer_state, optimizer=opt_meta, rng=rng_state())
        atomic_write_text(tmp / "state.json", json.dumps(state))
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write training state to {tmp}: {err}; {final} is unchanged") from err
    except CheckpointError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:  # killed or failing in between, find_training_state() still finds the complete last.old/
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
    except OSError as err:
        raise CheckpointError(f"could not move {tmp} into place as {final}: {err}; the previous state is kept") from err
    shutil.rmtree(old, ignore_errors=True)


def load_training_state(
    state_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Restore model, optimizer and RNG from ``state_dir``; return the trainer's own state.

    ``state.json`` must hold ``optimizer``, ``rng`` and every key in ``required``; anything missing or damaged
    is a CheckpointError naming the file and the key (checked before the model is touched, where possible).
    """
    path = state_dir / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is unreadable ({err}); cannot resume") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds {type(state).__name__}, not a JSON object; cannot resume")
    missing = [key for key in ("optimizer", "rng", *required) if key not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(map(repr, missing))}: the training state is damaged or "
                              "was not written by this version; cannot resume (start a new run)")
    load_state_into(model, load_weights(state_dir / WEIGHTS_FILE), state_dir / WEIGHTS_FILE)
    opt_tensors = load_weights(state_dir / "optimizer.safetensors")
    try:
        optimizer.load_state_dict(_optimizer_state(opt_tensors, state.pop("optimizer")))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"{path}: 'optimizer' does not match {state_dir / 'optimizer.safetensors'} and the "
                              f"model ({type(err).__name__}: {err}); cannot resume") from None
    try:
        set_rng_state(state.pop("rng"))
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise CheckpointError(f"{path}: 'rng' is not a valid random-number-generator state "
                              f"({type(err).__name__}: {err}); cannot resume exactly (start a new run)") from None
    return state


def load_weight_average(state_dir: Path) -> dict[str, torch.Tensor] | None:
    """The weight average saved beside a training state, or None when the run kept none."""
    path = state_dir / AVERAGE_FILE
    return load_weights(path) if path.is_file() else None
