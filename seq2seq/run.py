"""A training run's parts and their setup: the data it reads, the model, optimizer, schedule and weight average
it changes, the counters an exact ``--resume`` restores, and the log it writes. The loop itself is in
:mod:`seq2seq.train`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from seq2seq.api import source_ids
from seq2seq.checkpoint import (
    CONFIG_FILE,
    SRC_TOKENIZER_FILE,
    TGT_TOKENIZER_FILE,
    CheckpointError,
    atomic_write_text,
    load_training_state,
    load_weight_average,
    save_training_state,
)
from seq2seq.config import Config
from seq2seq.data import DataError, TokenBatchSampler, read_split, tokenize_split
from seq2seq.model import Seq2Seq, build_model
from seq2seq.optim import LRSchedule, WeightAverage, budget_progress, build_optimizer
from seq2seq.precision import choose_autocast
from seq2seq.resume import TrainingError
from seq2seq.tokenizer import Tokenizer, load_tokenizers, train_tokenizers
from seq2seq.validation import ValidationSet

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


@dataclass
class TrainingData:
    """Tokenizers, tokenized training pairs with their batch sampler, and the validation set."""

    src_tok: Tokenizer
    tgt_tok: Tokenizer
    train: Any  # datasets.Dataset with src_ids / tgt_ids / src_len / tgt_len
    sampler: TokenBatchSampler
    valid: ValidationSet


@dataclass
class Run:
    """What one training run changes as it goes, and where it writes."""

    cfg: Config
    out_dir: Path
    device: torch.device
    amp: torch.dtype | None  # training autocast dtype (None = fp32)
    decode_amp: torch.dtype | None  # validation decoding autocast dtype
    model: Seq2Seq
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    average: WeightAverage | None
    state: TrainerState
    segment_start: float = field(default_factory=time.perf_counter)
    last_save: float = field(default_factory=time.perf_counter)  # perf_counter() of the latest save of last/
    log_file: Any = None

    def elapsed(self) -> float:
        """Seconds of training so far, over every resumed segment (validation included)."""
        return self.state.elapsed_seconds + time.perf_counter() - self.segment_start

    def close_segment(self) -> None:
        """Fold the time since the segment started into the saved state (before saving or stopping)."""
        now = time.perf_counter()
        self.state.elapsed_seconds += now - self.segment_start
        self.segment_start = now

    def progress(self) -> float:
        """Fraction of the training budget used (0 without a budget)."""
        t = self.cfg.train
        return budget_progress(self.state.step, self.elapsed(), t.max_steps, t.max_minutes)

    def log(self, record: dict) -> None:
        self.log_file.write(json.dumps(record) + "\n")
        self.log_file.flush()

    def checkpoint(self) -> None:
        """Save ``last/`` (at a step boundary: weights, optimizer, RNG and counters agree) and restart the
        ``train.save_every`` clock."""
        self.close_segment()
        self.save_last()
        self.last_save = time.perf_counter()

    def save_due(self) -> bool:
        """Whether ``train.save_every`` minutes have passed since the latest save."""
        every = self.cfg.train.save_every
        return every > 0 and time.perf_counter() - self.last_save >= every * 60

    def save_last(self) -> None:
        self.state.schedule = self.schedule.state_dict()
        self.state.average_updates = self.average.updates if self.average else 0
        save_training_state(self.out_dir, self.model, self.optimizer, {**asdict(self.state), "config": self.cfg.to_dict()},
                            self.average.state_dict() if self.average else None)


# ---------------------------------------------------------------------------- setup
@contextlib.contextmanager
def run_logging(log_file: Path) -> Iterator[None]:
    """Log the ``seq2seq`` loggers to ``train.log`` and the console (through tqdm so the progress bar stays
    intact) for the duration of a run; the handlers are removed afterwards."""
    from tqdm import tqdm

    class TqdmHandler(logging.StreamHandler):
        def emit(self, record: logging.LogRecord) -> None:
            tqdm.write(self.format(record), file=sys.stderr)

    root = logging.getLogger("seq2seq")
    previous_level, previous_propagate = root.level, root.propagate
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    handlers = [logging.FileHandler(log_file, encoding="utf-8"), TqdmHandler()]
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)
        root.propagate = previous_propagate


def iterate_rows(dataset, column: str, chunk: int = 4096) -> Iterator[str]:
    """Stream one column of a (memory-mapped) dataset without loading it whole."""
    for start in range(0, len(dataset), chunk):
        yield from dataset[start : start + chunk][column]


def prepare_data(cfg: Config, out_dir: Path) -> TrainingData:
    """Read the corpus, train (or reuse) the tokenizers in ``out_dir``, tokenize, build the batch sampler."""
    logger.info("reading corpus %s (%s -> %s)", cfg.data.path, cfg.data.src_lang, cfg.data.tgt_lang)
    raw_train = read_split(cfg.data, cfg.data.train_split)
    raw_valid = read_split(cfg.data, cfg.data.valid_split)
    if len(raw_train) == 0:
        raise DataError(f"the training split '{cfg.data.train_split}' of {cfg.data.path} has no sentence pairs")
    if (out_dir / SRC_TOKENIZER_FILE).is_file() and (out_dir / TGT_TOKENIZER_FILE).is_file():
        src_tok, tgt_tok = load_tokenizers(out_dir)
        logger.info("tokenizers loaded from %s", out_dir)
    else:
        started = time.perf_counter()
        src_tok, tgt_tok = train_tokenizers(
            cfg.tokenizer, iterate_rows(raw_train, "src"), iterate_rows(raw_train, "tgt"), out_dir
        )
        logger.info("tokenizers trained in %.1f s (vocab %d / %d)", time.perf_counter() - started,
                    src_tok.vocab_size, tgt_tok.vocab_size)
    train_data = tokenize_split(raw_train, src_tok, tgt_tok, cfg.data.cache_dir, cfg.data.max_length,
                                cfg.data.num_workers)
    valid_data = tokenize_split(raw_valid, src_tok, tgt_tok, cfg.data.cache_dir, None)
    # truncated as the Translator does (src_ids end in EOS): a 1 MB validation line must not stall
    valid_src_ids = [source_ids(ids[:-1], cfg.decode.max_src_length) for ids in valid_data["src_ids"]]
    valid_references = list(valid_data["tgt"]) if "tgt" in valid_data.column_names else list(raw_valid["tgt"])
    if cfg.train.valid_bleu_sentences:
        valid_src_ids = valid_src_ids[: cfg.train.valid_bleu_sentences]
        valid_references = valid_references[: cfg.train.valid_bleu_sentences]
    sampler = TokenBatchSampler.from_dataset(train_data, cfg.train.max_tokens, cfg.train.seed)
    logger.info("train %d pairs (%d batches/epoch), valid %d pairs", len(train_data), len(sampler), len(valid_data))
    return TrainingData(src_tok, tgt_tok, train_data, sampler, ValidationSet(valid_data, valid_src_ids, valid_references))


def build_run(cfg: Config, out_dir: Path, data: TrainingData, device: torch.device, state_dir: Path | None) -> Run:
    """Model, optimizer, schedule, weight average and compute dtypes; restored from ``state_dir`` when resuming."""
    tcfg = cfg.train
    model = build_model(cfg.model, data.src_tok.vocab_size, data.tgt_tok.vocab_size).to(device)
    cache_dir = cfg.data.cache_dir
    amp = choose_autocast(tcfg.dtype, device, model, "train", cache_dir, tcfg.max_tokens)
    decode_amp = choose_autocast(cfg.decode.dtype, device, model, "decode", cache_dir, cfg.decode.batch_size,
                                 beam_size=cfg.decode.beam_size)
    optimizer = build_optimizer(tcfg, model.parameters())
    run = Run(cfg=cfg, out_dir=out_dir, device=device, amp=amp, decode_amp=decode_amp, model=model,
              optimizer=optimizer, schedule=LRSchedule(optimizer, tcfg),
              scaler=torch.amp.GradScaler("cuda", enabled=amp == torch.float16),
              average=WeightAverage(model, tcfg.ema_decay) if tcfg.ema_decay > 0 else None, state=TrainerState())
    if state_dir is not None:
        saved = load_training_state(state_dir, model, optimizer, required=tuple(TrainerState.__dataclass_fields__))
        run.state = trainer_state_from(saved, state_dir / "state.json")
        run.schedule.load_state_dict(run.state.schedule)
        if run.average is not None:
            averaged = load_weight_average(state_dir)
            if averaged is None:
                raise TrainingError(f"{state_dir} holds no weight average (average.safetensors) but train.ema_decay = "
                                    f"{tcfg.ema_decay}; resume with --set train.ema_decay=0 or start a new run")
            run.average.load_state_dict({k: v.to(device) for k, v in averaged.items()}, run.state.average_updates)
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", state_dir, run.state.step, run.state.epoch,
                    run.state.batch_in_epoch)
    if tcfg.compile:
        model.compile_decoder_step()
        logger.info("decoder step compiled with torch.compile (the first batches include compile time)")
    atomic_write_text(out_dir / CONFIG_FILE, cfg.to_yaml())
    logger.info("model: %s, %d parameters, device %s, training compute %s, validation decoding %s", cfg.model.rnn_type,
                model.num_parameters(), device, amp or torch.float32, decode_amp or torch.float32)
    return run
