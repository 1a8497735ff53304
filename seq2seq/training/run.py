"""A training run's parts and their setup: the learner (model, optimizer, scaler, weight average) and schedule it
changes, the counters an exact ``--resume`` restores, its one clock, and the log it writes. The data it reads is prepared by
:mod:`seq2seq.training.prepare`; the loop itself is in :mod:`seq2seq.train`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from seq2seq.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    atomic_write_text,
    load_state_into,
    load_weights,
)
from seq2seq.config import Config
from seq2seq.training.distributed import Distributed, StepAgreement
from seq2seq.model import build_model
from seq2seq.training.optimizer import LRSchedule, WeightAverage, budget_progress, build_optimizer
from seq2seq.dtype_auto import choose_dtype
from seq2seq.precision import ComputeDtypes, apply_numerics
from seq2seq.decoding.search import decoding_work
from seq2seq.training.prepare import TrainingData
from seq2seq.training.saved_state import (
    load_training_state,
    load_weight_average,
    rng_state,
    save_training_state,
    set_rng_state,
)
from seq2seq.training import TrainingError
from seq2seq.training.resume import StopRequest, resumed_dtypes
from seq2seq.training.step import Learner, StepSettings, training_work

logger = logging.getLogger("seq2seq.train")


@dataclass
class TrainerState:
    """Everything besides weights/optimizer/RNG that an exact resume needs (saved as JSON)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of ``epoch`` already consumed
    best_bleu: float = -1.0
    best_step: int = 0
    best_weights: str = "raw"  # which weights scored best_bleu: "raw" or "average"
    last_bleu: float = -1.0
    validations_without_improvement: int = 0
    elapsed_seconds: float = 0.0
    target_tokens: int = 0
    average_updates: int = 0
    schedule: dict[str, Any] = field(default_factory=dict)


def trainer_state_from(saved: dict[str, Any], source: Path) -> TrainerState:
    """The TrainerState in a loaded ``state.json``; a value of the wrong type raises CheckpointError naming it."""
    values = {}
    for name, spec in TrainerState.__dataclass_fields__.items():
        value, kind = saved[name], {"int": int, "float": (int, float), "str": str}.get(str(spec.type), dict)
        if isinstance(value, bool) or not isinstance(value, kind) or (kind is int and value < 0):
            raise CheckpointError(f"{source}: '{name}' = {value!r} is not a valid {spec.type}; the training state "
                                  "is damaged; cannot resume (start a new run)")
        values[name] = value
    return TrainerState(**values)


class TrainingClock:
    """The one clock of a run: seconds of training over every resumed segment (validation and saves included).

    :meth:`seconds` is what the loop's time decisions read (the time budget, the learning rate under a time
    budget, the time left): under torchrun it is rank 0's reading as agreed after the latest step
    (:meth:`Run.agree`), so every rank decides alike. :meth:`local_seconds` is this process's own reading, the
    value a step's agreement shares. The clock also times the ``train.save_every`` interval.
    """

    def __init__(self, folded_seconds: float = 0.0) -> None:
        self.restart(folded_seconds)

    def restart(self, folded_seconds: float) -> None:
        """Start a segment after ``folded_seconds`` of earlier ones (``TrainerState.elapsed_seconds``)."""
        self.folded = folded_seconds
        self.segment_start = self.last_save = time.perf_counter()
        #: rank 0's reading as of the latest step; until the first, the folded seconds, which every rank has alike
        self.agreed = folded_seconds

    def local_seconds(self) -> float:
        return self.folded + time.perf_counter() - self.segment_start

    def seconds(self) -> float:
        """Seconds of training as every rank agrees on them (as of the latest step; before the first step of a
        segment, the seconds of the segments before it)."""
        return self.agreed

    def fold(self) -> float:
        """Fold the time since the segment started into the total, and return it (before saving or stopping)."""
        now = time.perf_counter()
        self.folded += now - self.segment_start
        self.segment_start = now
        return self.folded

    def save_due(self, every_minutes: float) -> bool:
        """Whether ``every_minutes`` (``train.save_every``; 0: never) have passed since :meth:`saved`."""
        return every_minutes > 0 and time.perf_counter() - self.last_save >= every_minutes * 60

    def saved(self) -> None:
        self.last_save = time.perf_counter()


@dataclass
class Run:
    """One training run: its config and output directory, the :class:`Learner` (model, optimizer, scaler, weight
    average) and learning-rate schedule, the resolved compute dtypes, the counters an exact resume restores, the
    clock, the other processes, and the stop request and log."""

    cfg: Config
    out_dir: Path
    learner: Learner
    schedule: LRSchedule
    dtypes: ComputeDtypes
    state: TrainerState
    clock: TrainingClock = field(default_factory=TrainingClock)
    dist: Distributed = field(default_factory=Distributed)
    stop: StopRequest = field(default_factory=StopRequest)
    log_file: Any = None
    tensorboard: Any = None  # a seq2seq.training.tensorboard.TensorBoardLog on rank 0 with train.tensorboard
    #: the latest step's agreement between ranks (rank 0's clock, stop and save decisions; see seq2seq/training/distributed.py)
    agreed: StepAgreement | None = None

    def agree(self, local_loss: float) -> float:
        """Share this step's loss, clock, stop request and save decision with the other ranks (see
        :meth:`Distributed.agree`); the loop's time and stop decisions read the result. Returns the step's loss."""
        self.agreed = self.dist.agree(local_loss, self.clock.local_seconds(), self.stop.requested is not None,
                                      self.clock.save_due(self.cfg.train.save_every))
        self.clock.agreed = self.agreed.elapsed
        return self.agreed.loss

    def stop_requested(self) -> bool:
        """Whether to stop at this step boundary: this process was signalled (one process), or some rank was, as
        agreed after the latest step (several)."""
        if self.dist.enabled:
            return self.agreed is not None and self.agreed.stop
        return self.stop.requested is not None

    def close_segment(self) -> None:
        """Fold the time since the segment started into the saved state (before saving or stopping)."""
        self.state.elapsed_seconds = self.clock.fold()

    def progress(self) -> float:
        """Fraction of the training budget used (0 without a budget)."""
        t = self.cfg.train
        return budget_progress(self.state.step, self.clock.seconds(), t.max_steps, t.max_minutes)

    def log(self, record: dict) -> None:
        if self.log_file is not None:  # rank 0 only
            self.log_file.write(json.dumps(record) + "\n")
            self.log_file.flush()
        if self.tensorboard is not None:
            self.tensorboard.write(record)

    def checkpoint(self) -> None:
        """Save ``last/`` (at a step boundary: weights, optimizer, RNG and counters agree) and restart the
        ``train.save_every`` clock."""
        self.close_segment()
        self.save_last()
        self.clock.saved()

    def save_last(self) -> None:
        """Rank 0 writes ``last/``, with every rank's random-number state (all ranks must call this)."""
        rank_rng = self.dist.gather(rng_state(), "collecting random-number states for last/")
        if not self.dist.is_main:
            return
        learner = self.learner
        self.state.schedule = self.schedule.state_dict()
        self.state.average_updates = learner.average.updates if learner.average else 0
        extra = {"config": self.cfg.to_dict(), "world_size": self.dist.world_size, "dtypes": asdict(self.dtypes),
                 "scaler": learner.scaler.state_dict()}
        if self.dist.enabled:
            extra["rank_rng"] = rank_rng
        save_training_state(self.out_dir, learner.model, learner.optimizer, {**asdict(self.state), **extra},
                            learner.average.state_dict() if learner.average else None)


def restore_scaler(scaler: torch.amp.GradScaler, saved: dict[str, Any], source: Path) -> None:
    """Give an fp16 run's gradient scaler back its saved state (scale, growth tracker), so that a resumed run does
    not start again at the initial scale; nothing for a disabled scaler (fp32, bf16) or a state saved without."""
    state = saved.get("scaler")
    if not scaler.is_enabled() or not state:
        return
    try:
        scaler.load_state_dict(state)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"{source}: 'scaler' is not a gradient scaler's state ({type(err).__name__}: {err}); "
                              "the training state is damaged (start a new run)") from None


def restore_rank_rng(saved: dict[str, Any], dist: Distributed, state_dir: Path) -> None:
    """Check that a run resumes under as many processes as it was saved with, and give each rank back its own
    random-number state (``load_training_state`` restored rank 0's)."""
    saved_world = saved.get("world_size", 1)
    if saved_world != dist.world_size:
        raise TrainingError(f"{state_dir} was saved by a run of {saved_world} process(es), and this one has "
                            f"{dist.world_size}: the batches of a step depend on the number of processes; resume "
                            f"with torchrun --nproc_per_node (x --nnodes) = {saved_world}, or start a new run")
    if dist.enabled and dist.rank > 0:
        rank_rng = saved.get("rank_rng")
        if not isinstance(rank_rng, list) or len(rank_rng) != dist.world_size:
            raise CheckpointError(f"{state_dir / 'state.json'}: 'rank_rng' does not hold {dist.world_size} "
                                  "random-number states; the training state is damaged (start a new run)")
        try:
            set_rng_state(rank_rng[dist.rank])
        except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as err:
            raise CheckpointError(f"{state_dir / 'state.json'}: rank {dist.rank}'s random-number state is damaged "
                                  f"({type(err).__name__}: {err}); start a new run") from None


# ---------------------------------------------------------------------------- setup
@contextlib.contextmanager
def run_logging(log_file: Path | None, rank_prefix: str = "") -> Iterator[None]:
    """Log the ``seq2seq`` loggers to ``train.log`` and the console (through tqdm so the progress bar stays
    intact) for the duration of a run; the handlers are removed afterwards. Without ``log_file`` (the ranks other
    than 0 of a distributed run) only warnings and errors reach the console, each line led by ``rank_prefix``."""
    from tqdm import tqdm

    class TqdmHandler(logging.StreamHandler):
        def emit(self, record: logging.LogRecord) -> None:
            tqdm.write(self.format(record), file=sys.stderr)

    root = logging.getLogger("seq2seq")
    previous_level, previous_propagate = root.level, root.propagate
    formatter = logging.Formatter(f"%(asctime)s {rank_prefix}%(levelname)s %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [TqdmHandler()]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO if log_file is not None else logging.WARNING)
    root.propagate = False
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)
        root.propagate = previous_propagate


def build_run(cfg: Config, out_dir: Path, data: TrainingData, device: torch.device, state_dir: Path | None,
              dist: Distributed | None = None, init_dir: Path | None = None) -> Run:
    """Model, optimizer, schedule, weight average and compute dtypes; restored from ``state_dir`` when resuming.
    A new fine-tuning run's model starts from the weights of the model directory ``init_dir``
    (seq2seq/training/init_from.py), before the weight average copies them.

    Under several processes (``dist``) rank 0 picks the compute dtypes for all, and the model is wrapped in
    DistributedDataParallel (which averages the gradients over the ranks during the backward pass).
    """
    tcfg, dist = cfg.train, dist or Distributed()
    model = build_model(cfg.model, data.src_tok.vocab_size, data.tgt_tok.vocab_size).to(device)
    if init_dir is not None and state_dir is None:
        load_state_into(model, load_weights(init_dir / WEIGHTS_FILE), init_dir / WEIGHTS_FILE)
    cache_dir = cfg.data.cache_dir
    dtypes = resumed_dtypes(cfg, state_dir, device) if state_dir is not None else None
    dtypes = dtypes or ComputeDtypes(**dist.from_main(lambda: asdict(ComputeDtypes(
        choose_dtype(tcfg.dtype, device, model, training_work(tcfg.max_tokens), cache_dir),
        choose_dtype(cfg.decode.dtype, device, model, decoding_work(cfg.decode.batch_size, cfg.decode.beam_size),
                     cache_dir))), "choosing the compute dtype"))
    apply_numerics(dtypes.train)  # on every rank (rank 0 alone resolved them), whatever the device
    optimizer = build_optimizer(tcfg, model.parameters())
    learner = Learner(model, optimizer, StepSettings.of(tcfg), device, dtypes.train_amp,
                      average=WeightAverage(model, tcfg.ema_decay) if tcfg.ema_decay > 0 else None, ranks=dist)
    run = Run(cfg=cfg, out_dir=out_dir, learner=learner, schedule=LRSchedule(optimizer, tcfg), dtypes=dtypes,
              state=TrainerState(), dist=dist)
    if dist.enabled and state_dir is None:  # dropout differs between ranks (the weights came from one seed)
        torch.manual_seed(tcfg.seed + 1_000_003 * dist.rank)
        random.seed(tcfg.seed + 1_000_003 * dist.rank)
    if state_dir is not None:
        saved = load_training_state(state_dir, model, optimizer, required=tuple(TrainerState.__dataclass_fields__))
        restore_rank_rng(saved, dist, state_dir)
        restore_scaler(learner.scaler, saved, state_dir / "state.json")
        run.state = trainer_state_from(saved, state_dir / "state.json")
        run.schedule.load_state_dict(run.state.schedule)
        if learner.average is not None:
            averaged = load_weight_average(state_dir)
            if averaged is None:
                raise TrainingError(f"{state_dir} holds no weight average (average.safetensors) but train.ema_decay = "
                                    f"{tcfg.ema_decay}; resume with --set train.ema_decay=0 or start a new run")
            learner.average.load_state_dict({k: v.to(device) for k, v in averaged.items()}, run.state.average_updates)
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", state_dir, run.state.step, run.state.epoch,
                    run.state.batch_in_epoch)
    if tcfg.compile:
        model.compile_decoder_step()
        logger.info("decoder step compiled with torch.compile (the first batches include compile time)")
    learner.wrap_for_ranks()
    if dist.enabled:
        logger.info("data parallel over %d processes (%s): each step trains on %d x %d batches", dist.world_size,
                    torch.distributed.get_backend(), dist.world_size, tcfg.accumulate)
    if dist.is_main:
        atomic_write_text(out_dir / CONFIG_FILE, cfg.to_yaml())
    logger.info("model: %s, %d parameters, device %s, training compute %s, validation decoding %s", cfg.model.rnn_type,
                model.num_parameters(), device, dtypes.train_amp or torch.float32, dtypes.decode_amp or torch.float32)
    return run
