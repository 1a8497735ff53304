"""Training, on CPU or GPU: ``python -m seq2seq.train --config configs/multi30k_en_de.yaml --data DIR``.

The loop reads top to bottom (:func:`_train`): data and tokenizers (:func:`prepare_data`) -> model, optimizer,
schedule, weight average (:func:`build_run`) -> for each token batch: one optimizer step (:func:`train_step`)
-> every ``valid_every`` steps and at the end of the budget: validation of the raw and the averaged weights,
the best kept, ``last/`` saved for an exact ``--resume`` (:func:`validate_and_save`) -> test BLEU of the best
model. ``last/`` is also saved at step 0, every ``train.save_every`` minutes and on Ctrl-C / SIGTERM, always
between two steps (:func:`run_loop`). Under a budget (``train.max_minutes`` / ``train.max_steps``) the ``linear`` and ``cosine`` schedules
anneal the learning rate to its minimum exactly when the budget runs out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from seq2seq.api import resolve_device
from seq2seq.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    atomic_write_text,
    find_training_state,
    save_model_dir,
)
from seq2seq.config import Config, ConfigError, load_config
from seq2seq.data import Batch, DataError, TokenBatchSampler, batch_view, read_batch
from seq2seq.optim import estimated_total_steps
from seq2seq.resume import (
    StopRequest,
    TrainingError,
    check_resume_config,
    check_reused_tokenizers,
)
from seq2seq.run import Run, TrainingData, build_run, prepare_data, run_logging
from seq2seq.tokenizer import TokenizerError
from seq2seq.validation import evaluate_test_splits, validate

logger = logging.getLogger("seq2seq.train")


# ---------------------------------------------------------------------------- one step
def fetch_batch(dataset, indices: list[int]) -> Batch:
    return read_batch(batch_view(dataset), indices)


def train_step(run: Run, micro_batches: list[Batch]) -> float | None:
    """One optimizer step over ``micro_batches`` (gradient accumulation); returns the mean loss per target
    token, or None when the loss was not finite and the step was skipped."""
    tcfg, model, optimizer = run.cfg.train, run.model, run.optimizer
    group_tokens = sum(b.num_tgt_tokens for b in micro_batches)
    optimizer.zero_grad(set_to_none=True)
    group_loss = 0.0
    for batch in micro_batches:
        with torch.autocast(run.device.type, dtype=run.amp, enabled=run.amp is not None):
            loss, _ = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out,
                                 tcfg.label_smoothing, tcfg.teacher_forcing_ratio)
        run.scaler.scale(loss / group_tokens).backward()
        group_loss += float(loss.detach())
    if not math.isfinite(group_loss):
        optimizer.zero_grad(set_to_none=True)
        return None
    if tcfg.clip_norm > 0:
        run.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_norm)
    run.scaler.step(optimizer)
    run.scaler.update()
    if run.average is not None:
        run.average.update(model)
    return group_loss / group_tokens


# ---------------------------------------------------------------------------- validation and saving
def validate_and_save(run: Run, data: TrainingData) -> bool:
    """Validate the raw weights (and the weight average), keep the best as the model directory, save ``last/``.

    Returns True when early stopping says stop.
    """
    cfg, state, model = run.cfg, run.state, run.model
    scored = {"raw": validate(model, data.valid, cfg, data.tgt_tok, run.device, run.amp, run.decode_amp)}
    if run.average is not None:
        with run.average.swapped_in(model):
            scored["average"] = validate(model, data.valid, cfg, data.tgt_tok, run.device, run.amp, run.decode_amp)
    chosen = max(scored, key=lambda name: scored[name]["bleu"])  # ties: the raw weights
    result = scored[chosen]
    improved = result["bleu"] > state.best_bleu
    state.last_bleu = result["bleu"]
    if improved:
        state.best_bleu, state.best_step, state.best_weights = result["bleu"], state.step, chosen
        state.validations_without_improvement = 0
        with run.average.swapped_in(model) if chosen == "average" else contextlib.nullcontext():
            save_model_dir(run.out_dir, cfg, model, data.src_tok, data.tgt_tok)
    else:
        state.validations_without_improvement += 1
    run.schedule.on_validation(result["bleu"])
    record = {"type": "valid", "step": state.step, "epoch": state.epoch, "val_loss": round(result["loss"], 4),
              "val_ppl": round(result["ppl"], 2), "val_bleu": result["bleu"], "val_chrf": result["chrf"],
              "weights": chosen, "lr": run.optimizer.param_groups[0]["lr"], "elapsed_min": round(run.elapsed() / 60, 2)}
    if run.average is not None:
        record.update(raw_bleu=scored["raw"]["bleu"], average_bleu=scored["average"]["bleu"])
    run.log(record)
    averaged = f" (average {scored['average']['bleu']:.2f}, raw {scored['raw']['bleu']:.2f})" if run.average else ""
    logger.info("validation at step %d: loss %.3f ppl %.2f BLEU %.2f chrF %.2f%s%s", state.step, result["loss"],
                result["ppl"], result["bleu"], result["chrf"], averaged, " (best)" if improved else "")
    model.train()
    run.checkpoint()
    return cfg.train.patience > 0 and state.validations_without_improvement >= cfg.train.patience


# ---------------------------------------------------------------------------- the loop
class ThroughputWindow:
    """Loss and tokens/s over the steps since the last log line (validation time excluded)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start, self.target_tokens, self.all_tokens, self.loss, self.steps = time.perf_counter(), 0, 0, 0.0, 0

    def add(self, loss: float, micro_batches: list[Batch]) -> None:
        tgt = sum(b.num_tgt_tokens for b in micro_batches)
        self.target_tokens += tgt
        self.all_tokens += tgt + sum(int(b.src_lengths.sum()) for b in micro_batches)
        self.loss += loss
        self.steps += 1

    def record(self) -> dict[str, float]:
        seconds = max(time.perf_counter() - self.start, 1e-9)
        mean_loss = self.loss / max(self.steps, 1)
        return {"loss": round(mean_loss, 4), "ppl": round(math.exp(min(mean_loss, 50)), 2),
                "tokens_per_s": round(self.target_tokens / seconds, 1),
                "src_tgt_tokens_per_s": round(self.all_tokens / seconds, 1)}


def train(cfg: Config, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train a model into ``out_dir``; returns a summary (best BLEU, steps, test results)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with run_logging(out_dir / "train.log"):
        return _train(cfg, out_dir, resume)


def _train(cfg: Config, out_dir: Path, resume: bool) -> dict[str, Any]:
    tcfg = cfg.train
    device = resolve_device(tcfg.device)
    if device.type == "cpu":
        torch.set_num_threads(tcfg.threads or os.cpu_count() or 1)
    state_dir = find_training_state(out_dir) if resume else None
    if resume and state_dir is None:
        if (out_dir / CONFIG_FILE).is_file():
            raise TrainingError(f"no checkpoint yet in {out_dir}: training was stopped before the first save of its "
                                "state (last/); start again without --resume")
        raise TrainingError(f"nothing to resume in {out_dir}: no last/ training state (train without --resume first)")
    if state_dir is not None:
        check_resume_config(cfg, state_dir)
    if not resume and find_training_state(out_dir) is not None:
        raise TrainingError(f"{out_dir} already holds a training run; pass --resume to continue it or choose another --out")
    if not resume:  # written first, so that a run stopped while it prepares the data is recognised as one
        check_reused_tokenizers(cfg, out_dir)
        atomic_write_text(out_dir / CONFIG_FILE, cfg.to_yaml())
    random.seed(tcfg.seed)
    torch.manual_seed(tcfg.seed)
    data = prepare_data(cfg, out_dir)
    run = build_run(cfg, out_dir, data, device, state_dir)
    with open(out_dir / "train_log.jsonl", "a", encoding="utf-8") as run.log_file:
        stop_reason = run_loop(run, data)
    if stop_reason is None:
        logger.info("interrupted at step %d; training state saved in %s — continue with --resume", run.state.step,
                    out_dir / "last")
        return {"interrupted": True, "step": run.state.step, "best_bleu": run.state.best_bleu}
    state = run.state
    logger.info("stopped: %s; best validation BLEU %.2f at step %d (%s weights)", stop_reason, state.best_bleu,
                state.best_step, state.best_weights)
    try:
        from seq2seq.plots import plot_curves

        plot_curves(out_dir / "train_log.jsonl", out_dir / "curves.png")
    except Exception as err:  # a plot must never cost a trained model
        logger.warning("could not draw curves.png: %s", err)
    results = evaluate_test_splits(cfg, out_dir, device)
    return {"step": state.step, "best_bleu": state.best_bleu, "best_step": state.best_step,
            "best_weights": state.best_weights, "stop_reason": stop_reason, "test": results}


def run_loop(run: Run, data: TrainingData) -> str | None:
    """Train until a budget, early stopping or the epoch limit ends the run; returns why it stopped, or None
    when interrupted (Ctrl-C / SIGTERM, handled at the next step boundary).

    ``last/`` is saved at the start of a new run (step 0), at every validation, every ``train.save_every``
    minutes and on an interrupt, always between two steps: a process killed at any moment loses at most the
    steps since the latest save, and ``--resume`` from that save is exact.
    """
    from tqdm import tqdm

    tcfg, state = run.cfg.train, run.state
    progress = tqdm(total=tcfg.max_steps or None, initial=state.step, unit="step", dynamic_ncols=True, disable=None)
    window = ThroughputWindow()
    bad_steps_in_row = 0
    run.segment_start = run.last_save = time.perf_counter()
    run.model.train()
    stop = StopRequest()
    try:
        with stop:
            if state.step == 0 and state.epoch == 0 and state.batch_in_epoch == 0:
                run.checkpoint()  # a run killed before its first validation can still be resumed
            if tcfg.max_steps and state.step >= tcfg.max_steps:  # resumed after the final validation's save
                return f"reached train.max_steps = {tcfg.max_steps}"
            if tcfg.max_minutes and state.step > 0 and run.elapsed() >= tcfg.max_minutes * 60:
                return f"reached the time budget of {tcfg.max_minutes} minutes"
            while tcfg.max_epochs == 0 or state.epoch < tcfg.max_epochs:
                batches = epoch_batches(data.sampler, state.epoch)
                while state.batch_in_epoch < len(batches):
                    if stop.requested:  # a step boundary: weights, optimizer, RNG and counters agree
                        run.checkpoint()
                        return None
                    group = batches[state.batch_in_epoch : state.batch_in_epoch + tcfg.accumulate]
                    lr = run.schedule.step(state.step, run.progress())
                    micro_batches = [fetch_batch(data.train, indices).to(run.device) for indices in group]
                    loss = train_step(run, micro_batches)
                    if loss is None:
                        state.batch_in_epoch += len(group)
                        bad_steps_in_row += 1
                        logger.warning("non-finite loss at step %d: batch skipped (%d in a row)", state.step,
                                       bad_steps_in_row)
                        if bad_steps_in_row >= tcfg.max_bad_steps:
                            raise _too_many_bad_steps(run, bad_steps_in_row)
                        continue
                    bad_steps_in_row = 0
                    state.step += 1
                    state.batch_in_epoch += len(group)
                    state.target_tokens += sum(b.num_tgt_tokens for b in micro_batches)
                    window.add(loss, micro_batches)
                    progress.update(1)
                    if state.step % tcfg.log_every == 0:
                        record = {"type": "train", "step": state.step, "epoch": state.epoch, **window.record(),
                                  "lr": lr, "elapsed_min": round(run.elapsed() / 60, 2)}
                        run.log(record)
                        show_progress(progress, run, record)
                        window.reset()

                    used = run.progress()
                    total = estimated_total_steps(state.step, used)
                    out_of_steps = tcfg.max_steps and state.step >= tcfg.max_steps
                    out_of_time = tcfg.max_minutes and run.elapsed() >= tcfg.max_minutes * 60
                    # a periodic validation is skipped when the budget's final one is under half an interval away
                    periodic = state.step % tcfg.valid_every == 0 and (total is None or
                                                                       total - state.step >= tcfg.valid_every / 2)
                    if periodic or out_of_steps or out_of_time:
                        validation_start = time.perf_counter()
                        stop_early = validate_and_save(run, data)
                        window.start += time.perf_counter() - validation_start  # tokens/s counts training time only
                        if stop_early:
                            return f"early stopping: no BLEU improvement in {tcfg.patience} validations"
                    elif run.save_due():
                        run.checkpoint()
                    if out_of_steps:
                        return f"reached train.max_steps = {tcfg.max_steps}"
                    if out_of_time:
                        return f"reached the time budget of {tcfg.max_minutes} minutes"
                    if total is not None and tcfg.max_minutes:
                        progress.total = max(total, state.step)
                state.epoch += 1
                state.batch_in_epoch = 0
            validate_and_save(run, data)
            return f"reached train.max_epochs = {tcfg.max_epochs}"
    finally:
        progress.close()
        run.close_segment()


def epoch_batches(sampler: TokenBatchSampler, epoch: int) -> list[list[int]]:
    """The batches of ``epoch``: a pure function of (seed, epoch), which makes resume exact."""
    sampler.set_epoch(epoch)
    return list(sampler)


def show_progress(progress, run: Run, record: dict) -> None:
    """Loss, speed, learning rate, the latest validation BLEU and (under a time budget) the time left."""
    tcfg = run.cfg.train
    postfix = {"loss": f"{record['loss']:.3f}", "tok/s": f"{record['tokens_per_s']:.0f}", "lr": f"{record['lr']:.1e}"}
    if run.state.last_bleu >= 0:
        postfix["val_bleu"] = f"{run.state.last_bleu:.2f}"
    if tcfg.max_minutes:
        left = max(0.0, tcfg.max_minutes * 60 - run.elapsed())
        postfix["left"] = f"{int(left // 60)}:{int(left % 60):02d}"
    progress.set_postfix(postfix, refresh=False)


def _too_many_bad_steps(run: Run, count: int) -> TrainingError:
    kept = find_training_state(run.out_dir)
    return TrainingError(
        f"{count} non-finite losses in a row at step {run.state.step} (train.max_bad_steps = "
        f"{run.cfg.train.max_bad_steps}); stopping. " + (
            f"The last good state is in {kept} (resume with --resume, perhaps with a lower train.lr)" if kept
            else "No checkpoint had been saved yet; try a lower train.lr")
    )


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
    except KeyboardInterrupt:  # a second Ctrl-C / SIGTERM: stopped at once, the latest save is kept
        kept = find_training_state(args.out)
        print(f"interrupted twice: stopped without saving; {kept or 'no training state'} holds the latest save",
              file=sys.stderr)
        return 130
    except (ConfigError, DataError, TokenizerError, CheckpointError, TrainingError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)  # OSError: a full disk, an unwritable --out, ... (names the file)
        return 2
    if summary.get("interrupted"):
        return 130
    print(json.dumps({k: v for k, v in summary.items() if k != "test"}, indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
