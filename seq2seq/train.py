"""Training, on CPU or GPU: ``python -m seq2seq.train --config configs/multi30k_en_de.yaml --data DIR``.

The loop reads top to bottom: data and tokenizers -> model -> for each token batch: teacher-forced
loss, backward, clip, step -> every ``valid_every`` steps: validation loss, perplexity, greedy BLEU,
best model kept, ``last/`` saved for an exact ``--resume`` -> test BLEU of the best model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from seq2seq.api import Translator, autocast_dtype, resolve_device, source_ids, translate_ids
from seq2seq.checkpoint import (
    CONFIG_FILE,
    SRC_TOKENIZER_FILE,
    TGT_TOKENIZER_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    atomic_write_text,
    find_training_state,
    load_training_state,
    save_model_dir,
    save_training_state,
)
from seq2seq.config import Config, ConfigError, load_config
from seq2seq.data import Batch, DataError, TokenBatchSampler, collate, read_split, tokenize_split
from seq2seq.evaluate import score
from seq2seq.model import Seq2Seq, build_model
from seq2seq.optim import LRSchedule, build_optimizer
from seq2seq.tokenizer import Tokenizer, TokenizerError, load_tokenizers, train_tokenizers

logger = logging.getLogger("seq2seq.train")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite losses, nothing to resume, ...); the message says why."""


@dataclass
class TrainerState:
    """Everything besides weights/optimizer/RNG that an exact resume needs (saved as JSON)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of ``epoch`` already consumed
    best_bleu: float = -1.0
    best_step: int = 0
    validations_without_improvement: int = 0
    elapsed_seconds: float = 0.0
    target_tokens: int = 0
    schedule: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- setup helpers
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


def epoch_batches(sampler: TokenBatchSampler, epoch: int) -> list[list[int]]:
    """The batches of ``epoch``: a pure function of (seed, epoch), which makes resume exact."""
    sampler.set_epoch(epoch)
    return list(sampler)


def fetch_batch(dataset, indices: list[int]) -> Batch:
    rows = dataset[indices]
    return collate(rows["src_ids"], rows["tgt_ids"])


# ---------------------------------------------------------------------------- validation
@torch.no_grad()
def validation_loss(model: Seq2Seq, dataset, max_tokens: int, device: torch.device, amp: torch.dtype | None) -> float:
    """Mean cross entropy (no label smoothing) per real target token over the validation set."""
    model.eval()
    too_long = np.flatnonzero(np.asarray(dataset["src_len"]) + np.asarray(dataset["tgt_len"]) > max_tokens)
    if len(too_long):  # a pair that fits no batch (a 1 MB line, say) is left out, not a crash at step 500
        logger.warning("validation loss leaves out %d pairs longer than train.max_tokens = %d positions (first: "
                       "pair %d)", len(too_long), max_tokens, too_long[0] + 1)
        dataset = dataset.select(np.setdiff1d(np.arange(len(dataset)), too_long))
    sampler = TokenBatchSampler.from_dataset(dataset, max_tokens, 0, shuffle=False)
    total_loss, total_tokens = 0.0, 0
    for indices in sampler:
        batch = fetch_batch(dataset, indices).to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss, tokens = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
        total_loss += float(loss)
        total_tokens += tokens
    return total_loss / max(total_tokens, 1)


def validation_bleu(model: Seq2Seq, cfg: Config, src_ids: list[list[int]], references: list[str],
                    tgt_tok: Tokenizer, device: torch.device, amp: torch.dtype | None) -> dict:
    """Greedy BLEU/chrF of the model on the validation sources (detokenized, sacreBLEU)."""
    model.eval()
    hypotheses = translate_ids(model, src_ids, cfg.decode, beam_size=1, device=device, autocast_dtype=amp)
    texts = tgt_tok.decode([hyps[0].tokens for hyps in hypotheses])
    return score(texts, references)


# ---------------------------------------------------------------------------- the loop
def train(cfg: Config, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train a model into ``out_dir``; returns a summary (best BLEU, steps, test results)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with run_logging(out_dir / "train.log"):
        return _train(cfg, out_dir, resume)


def _train(cfg: Config, out_dir: Path, resume: bool) -> dict[str, Any]:
    tcfg = cfg.train
    device = resolve_device(tcfg.device)
    amp = autocast_dtype(tcfg.dtype, device)
    if device.type == "cpu":
        torch.set_num_threads(tcfg.threads or os.cpu_count() or 1)
    state_dir = find_training_state(out_dir) if resume else None
    if resume and state_dir is None:
        raise TrainingError(f"nothing to resume in {out_dir}: no last/ training state (train without --resume first)")
    if not resume and find_training_state(out_dir) is not None:
        raise TrainingError(f"{out_dir} already holds a training run; pass --resume to continue it or choose another --out")
    random.seed(tcfg.seed)
    torch.manual_seed(tcfg.seed)

    # Data and tokenizers (tokenizers are trained on the training split once, then reused).
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
    train_data = tokenize_split(raw_train, src_tok, tgt_tok, cfg.data.cache_dir, cfg.data.max_length)
    valid_data = tokenize_split(raw_valid, src_tok, tgt_tok, cfg.data.cache_dir, None)
    # truncated as the Translator does (src_ids end in EOS): a 1 MB validation line must not stall
    valid_src_ids = [source_ids(ids[:-1], cfg.decode.max_src_length) for ids in valid_data["src_ids"]]
    valid_references = list(valid_data["tgt"]) if "tgt" in valid_data.column_names else list(raw_valid["tgt"])
    if tcfg.valid_bleu_sentences:
        valid_src_ids = valid_src_ids[: tcfg.valid_bleu_sentences]
        valid_references = valid_references[: tcfg.valid_bleu_sentences]
    sampler = TokenBatchSampler.from_dataset(train_data, tcfg.max_tokens, tcfg.seed)
    logger.info("train %d pairs (%d batches/epoch), valid %d pairs", len(train_data), len(sampler), len(valid_data))

    # Model, optimizer, schedule; restored from last/ when resuming.
    model = build_model(cfg.model, src_tok.vocab_size, tgt_tok.vocab_size).to(device)
    optimizer = build_optimizer(tcfg, model.parameters())
    schedule = LRSchedule(optimizer, tcfg)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    state = TrainerState()
    if state_dir is not None:
        saved = load_training_state(state_dir, model, optimizer)
        state = TrainerState(**{k: v for k, v in saved.items() if k in TrainerState.__dataclass_fields__})
        schedule.load_state_dict(state.schedule)
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", state_dir, state.step, state.epoch,
                    state.batch_in_epoch)
    if tcfg.compile:
        model.compile_decoder_step()
        logger.info("decoder step compiled with torch.compile (the first batches include compile time)")
    atomic_write_text(out_dir / CONFIG_FILE, cfg.to_yaml())
    logger.info("model: %s, %d parameters, device %s, compute %s", cfg.model.rnn_type, model.num_parameters(),
                device, amp or torch.float32)

    log_file = open(out_dir / "train_log.jsonl", "a", encoding="utf-8")

    def log_record(record: dict) -> None:
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()

    def save_last() -> None:
        state.schedule = schedule.state_dict()
        save_training_state(out_dir, model, optimizer, asdict(state))

    def validate() -> bool:
        """Validate, keep the best model; returns True when early stopping says stop."""
        val_loss = validation_loss(model, valid_data, tcfg.max_tokens, device, amp)
        result = validation_bleu(model, cfg, valid_src_ids, valid_references, tgt_tok, device, amp)
        improved = result["bleu"] > state.best_bleu
        if improved:
            state.best_bleu, state.best_step = result["bleu"], state.step
            state.validations_without_improvement = 0
            save_model_dir(out_dir, cfg, model, src_tok, tgt_tok)
        else:
            state.validations_without_improvement += 1
        schedule.on_validation(result["bleu"])
        elapsed = state.elapsed_seconds + time.perf_counter() - segment_start
        log_record({"type": "valid", "step": state.step, "epoch": state.epoch, "val_loss": round(val_loss, 4),
                    "val_ppl": round(math.exp(min(val_loss, 50)), 2), "val_bleu": result["bleu"],
                    "val_chrf": result["chrf"], "lr": optimizer.param_groups[0]["lr"],
                    "elapsed_min": round(elapsed / 60, 2)})
        logger.info("validation at step %d: loss %.3f ppl %.2f BLEU %.2f chrF %.2f%s", state.step, val_loss,
                    math.exp(min(val_loss, 50)), result["bleu"], result["chrf"], " (best)" if improved else "")
        model.train()
        save_last()
        return tcfg.patience > 0 and state.validations_without_improvement >= tcfg.patience

    # SIGTERM stops like Ctrl-C: last/ is saved and the run can be resumed.
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    from tqdm import tqdm

    progress = tqdm(total=tcfg.max_steps or None, initial=state.step, unit="step", dynamic_ncols=True, disable=None)
    segment_start = time.perf_counter()
    window_start, window_target, window_all, window_loss, window_steps = time.perf_counter(), 0, 0, 0.0, 0
    bad_steps_in_row = 0
    stop_reason = "finished"
    model.train()
    try:
        while tcfg.max_epochs == 0 or state.epoch < tcfg.max_epochs:
            batches = epoch_batches(sampler, state.epoch)
            while state.batch_in_epoch < len(batches):
                group = batches[state.batch_in_epoch : state.batch_in_epoch + tcfg.accumulate]
                lr = schedule.step(state.step)
                micro_batches = [fetch_batch(train_data, indices).to(device) for indices in group]
                group_tokens = sum(b.num_tgt_tokens for b in micro_batches)
                optimizer.zero_grad(set_to_none=True)
                group_loss = 0.0
                for batch in micro_batches:
                    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                        loss, _ = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out,
                                             tcfg.label_smoothing, tcfg.teacher_forcing_ratio)
                    scaler.scale(loss / group_tokens).backward()
                    group_loss += float(loss.detach())
                if not math.isfinite(group_loss):
                    state.batch_in_epoch += len(group)
                    bad_steps_in_row += 1
                    optimizer.zero_grad(set_to_none=True)
                    logger.warning("non-finite loss at step %d: batch skipped (%d in a row)", state.step, bad_steps_in_row)
                    if bad_steps_in_row >= tcfg.max_bad_steps:
                        kept = find_training_state(out_dir)
                        raise TrainingError(
                            f"{bad_steps_in_row} non-finite losses in a row at step {state.step} (train.max_bad_steps "
                            f"= {tcfg.max_bad_steps}); stopping. " + (
                                f"The last good state is in {kept} (resume with --resume, perhaps with a lower "
                                "train.lr)" if kept else "No checkpoint had been saved yet; try a lower train.lr")
                        )
                    continue
                bad_steps_in_row = 0
                if tcfg.clip_norm > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_norm)
                scaler.step(optimizer)
                scaler.update()
                state.step += 1
                state.batch_in_epoch += len(group)  # only now: an interrupt mid-step must not skip the group
                state.target_tokens += group_tokens
                window_target += group_tokens
                window_all += group_tokens + sum(int(b.src_lengths.sum()) for b in micro_batches)
                window_loss += group_loss / group_tokens
                window_steps += 1
                progress.update(1)

                if state.step % tcfg.log_every == 0:
                    seconds = time.perf_counter() - window_start
                    elapsed = state.elapsed_seconds + time.perf_counter() - segment_start
                    mean_loss = window_loss / window_steps
                    record = {"type": "train", "step": state.step, "epoch": state.epoch, "loss": round(mean_loss, 4),
                              "ppl": round(math.exp(min(mean_loss, 50)), 2), "lr": lr,
                              "tokens_per_s": round(window_target / seconds, 1),
                              "src_tgt_tokens_per_s": round(window_all / seconds, 1),
                              "elapsed_min": round(elapsed / 60, 2)}
                    log_record(record)
                    progress.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{record['tokens_per_s']:.0f}", lr=f"{lr:.2e}")
                    window_start, window_target, window_all, window_loss, window_steps = time.perf_counter(), 0, 0, 0.0, 0

                out_of_steps = tcfg.max_steps and state.step >= tcfg.max_steps
                out_of_time = tcfg.max_minutes and (state.elapsed_seconds + time.perf_counter() - segment_start) >= tcfg.max_minutes * 60
                if state.step % tcfg.valid_every == 0 or out_of_steps or out_of_time:
                    validation_start = time.perf_counter()
                    if validate():
                        stop_reason = f"early stopping: no BLEU improvement in {tcfg.patience} validations"
                        raise StopIteration
                    window_start += time.perf_counter() - validation_start  # tokens/s counts training time only
                if out_of_steps:
                    stop_reason = f"reached train.max_steps = {tcfg.max_steps}"
                    raise StopIteration
                if out_of_time:
                    stop_reason = f"reached the time budget of {tcfg.max_minutes} minutes"
                    raise StopIteration
            state.epoch += 1
            state.batch_in_epoch = 0
        stop_reason = f"reached train.max_epochs = {tcfg.max_epochs}"
        validate()
    except StopIteration:
        pass
    except KeyboardInterrupt:
        state.elapsed_seconds += time.perf_counter() - segment_start
        segment_start = time.perf_counter()
        save_last()
        progress.close()
        logger.info("interrupted at step %d; training state saved in %s — continue with --resume", state.step,
                    out_dir / "last")
        log_file.close()
        signal.signal(signal.SIGTERM, previous_sigterm)
        return {"interrupted": True, "step": state.step, "best_bleu": state.best_bleu}
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    progress.close()
    state.elapsed_seconds += time.perf_counter() - segment_start
    segment_start = time.perf_counter()
    save_last()
    log_file.close()
    logger.info("stopped: %s; best validation BLEU %.2f at step %d", stop_reason, state.best_bleu, state.best_step)
    try:
        from seq2seq.plots import plot_curves

        plot_curves(out_dir / "train_log.jsonl", out_dir / "curves.png")
    except Exception as err:  # a plot must never cost a trained model
        logger.warning("could not draw curves.png: %s", err)
    results = evaluate_test_splits(cfg, out_dir, device)
    return {"step": state.step, "best_bleu": state.best_bleu, "best_step": state.best_step,
            "stop_reason": stop_reason, "test": results}


def _raise_keyboard_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def evaluate_test_splits(cfg: Config, out_dir: Path, device: torch.device) -> dict[str, Any]:
    """Greedy and beam BLEU/chrF of the best model on each test split -> ``results.json``."""
    if not (out_dir / WEIGHTS_FILE).is_file():
        logger.warning("no best model was saved (no validation ran); skipping the test evaluation")
        return {}
    from seq2seq.evaluate import translate_and_score

    translator = Translator.load(out_dir, device=str(device))
    results: dict[str, Any] = {}
    for split in cfg.data.test_splits:
        try:
            raw = read_split(cfg.data, split)
        except DataError as err:
            logger.warning("test split '%s' skipped: %s", split, err)
            continue
        sources, references = list(raw["src"]), list(raw["tgt"])
        results[split] = {}
        for name, beam in (("greedy", 1), (f"beam{cfg.decode.beam_size}", cfg.decode.beam_size)):
            _, result = translate_and_score(translator, sources, references, beam)
            results[split][name] = result
            logger.info("test %s %s: BLEU %.2f chrF %.2f (%.1f sentences/s) %s", split, name, result["bleu"],
                        result["chrf"], result["sentences_per_second"], result["bleu_signature"])
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, ensure_ascii=False))
    return results


# ---------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.train", description="Train an RNN translation model.")
    parser.add_argument("--config", help="YAML config (default: built-in defaults; with --resume: OUT/config.yaml)")
    parser.add_argument("--data", help="corpus: directory of {split}.{lang}[.gz] files, local datasets dir, or hub name")
    parser.add_argument("--src-lang", help="source language code (data.src_lang)")
    parser.add_argument("--tgt-lang", help="target language code (data.tgt_lang)")
    parser.add_argument("--out", default="runs/model", help="output directory (default: runs/model)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (train.max_steps)")
    parser.add_argument("--max-minutes", type=float, help="stop after this many minutes (train.max_minutes)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="train.device")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=0.0005 (repeatable)")
    parser.add_argument("extra_overrides", nargs="*", metavar="SECTION.KEY=VALUE", help="more overrides")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides) + list(args.extra_overrides)
    for flag, key in (("data", "data.path"), ("src_lang", "data.src_lang"), ("tgt_lang", "data.tgt_lang"),
                      ("max_steps", "train.max_steps"), ("max_minutes", "train.max_minutes"), ("device", "train.device")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    config_path = args.config
    if config_path is None and args.resume and (Path(args.out) / CONFIG_FILE).is_file():
        config_path = Path(args.out) / CONFIG_FILE
    return load_config(config_path, overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        summary = train(cfg, args.out, resume=args.resume)
    except (ConfigError, DataError, TokenizerError, CheckpointError, TrainingError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)  # OSError: a full disk, an unwritable --out, ... (names the file)
        return 2
    if summary.get("interrupted"):
        return 130
    print(json.dumps({k: v for k, v in summary.items() if k != "test"}, indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
