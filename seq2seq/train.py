"""Training, on CPU or GPU: ``python -m seq2seq.train --config configs/multi30k_en_de.yaml --data DIR``, or data
parallel over several processes: ``torchrun --nproc_per_node N -m seq2seq.train ...`` (:mod:`seq2seq.training.distributed`).

The loop reads top to bottom (:func:`_train`): data and tokenizers (:func:`prepare_data`, rank 0 first) -> model,
optimizer, schedule, weight average (:func:`build_run`) -> for each step's batches: one optimizer step
(:func:`seq2seq.training.step.train_step`) -> every ``valid_every`` steps and at the end of the budget: validation
of the raw and the averaged weights, the best kept, ``last/`` saved for an exact ``--resume``
(:func:`seq2seq.training.model_selection.validate_and_save`) -> test BLEU of the best model. ``last/`` is also saved at step 0, every ``train.save_every`` minutes and on
Ctrl-C / SIGTERM, always between two steps (:func:`run_loop`). Under a budget (``train.max_minutes`` /
``train.max_steps``) the ``linear`` and ``cosine`` schedules anneal the learning rate to its minimum exactly when
the budget runs out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from seq2seq.token_batches import TokenBatchSampler
from seq2seq.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    atomic_write_text,
    find_training_state,
)
from seq2seq.config import Config, ConfigError
from seq2seq.data import DataError
from seq2seq.final_evaluation import evaluate_test_splits
from seq2seq.precision import numerics_flags, resolve_device
from seq2seq.tokenizer import TokenizerError
from seq2seq.training.arguments import build_parser, config_from_args
from seq2seq.training.distributed import Distributed, exit_process, from_environment
from seq2seq.training.init_from import init_model_dir, start_from_model
from seq2seq.training.model_selection import validate_and_save
from seq2seq.training.optimizer import estimated_total_steps
from seq2seq.training.prepare import TrainingData, prepare_data
from seq2seq.training.resume import (
    TrainingError,
    check_resume_config,
    check_reused_tokenizers,
)
from seq2seq.training.run import Run, build_run, run_logging
from seq2seq.training.step import ThroughputWindow, step_share, train_step
from seq2seq.training.tensorboard import TensorBoardLog

logger = logging.getLogger("seq2seq.train")


# ---------------------------------------------------------------------------- the loop
def train(cfg: Config, out_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train a model into ``out_dir``; returns a summary (best BLEU, steps, test results).

    Started by ``torchrun`` (``WORLD_SIZE`` > 1), this process is one rank of a data-parallel run
    (:mod:`seq2seq.training.distributed`); rank 0 writes the files and logs.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dist, dist_device = from_environment(cfg.train.device, cfg.train.dist_timeout)
    dist.out_dir = str(out_dir)
    try:
        with run_logging(out_dir / "train.log" if dist.is_main else None, f"[rank {dist.rank}] " if dist.enabled else ""):
            return _train(cfg, out_dir, resume, dist, dist_device)
    finally:
        dist.close()


def _train(cfg: Config, out_dir: Path, resume: bool, dist: Distributed, dist_device: torch.device | None
           ) -> dict[str, Any]:
    tcfg = cfg.train
    device = dist_device or resolve_device(tcfg.device)
    if device.type == "cpu":  # processes sharing a machine share its cores
        torch.set_num_threads(tcfg.threads or max(1, (os.cpu_count() or 1) // dist.local_world_size))
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
    if not resume and dist.is_main:  # written first, so that a run stopped while it prepares the data is recognised
        check_reused_tokenizers(cfg, out_dir)
        atomic_write_text(out_dir / CONFIG_FILE, cfg.to_yaml())
    init_dir = None
    if cfg.train.init_from and not resume:  # fine-tuning: rank 0 puts the model's tokenizers into out_dir
        init_dir = start_from_model(cfg, out_dir) if dist.is_main else init_model_dir(cfg.train.init_from)
    random.seed(tcfg.seed)
    torch.manual_seed(tcfg.seed)
    tensorboard = TensorBoardLog(out_dir, tcfg.tensorboard and dist.is_main)  # before the data: fails fast
    data = dist.in_turns(lambda: prepare_data(cfg, out_dir), "preparing the data and tokenizers")
    run = build_run(cfg, out_dir, data, device, state_dir, dist, init_dir)
    log_file = open(out_dir / "train_log.jsonl", "a", encoding="utf-8") if dist.is_main else contextlib.nullcontext()
    with log_file as run.log_file, tensorboard as run.tensorboard:
        stop_reason = run_loop(run, data)
    # every rank is past its last collective before any leaves (a rank that exits while another still talks to it
    # can abort in gloo's teardown); rank 0 then evaluates the test splits alone
    dist.barrier("finishing the run")
    if not dist.is_main:
        return {"step": run.state.step, "best_bleu": run.state.best_bleu, "rank": dist.rank, "numerics": numerics_flags(),
                **({"interrupted": True} if stop_reason is None else {"stop_reason": stop_reason})}
    if stop_reason is None:
        logger.info("interrupted at step %d; training state saved in %s — continue with --resume", run.state.step,
                    out_dir / "last")
        return {"interrupted": True, "step": run.state.step, "best_bleu": run.state.best_bleu,
                "numerics": numerics_flags()}
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
            "best_weights": state.best_weights, "stop_reason": stop_reason, "numerics": numerics_flags(),
            "test": results}


def run_loop(run: Run, data: TrainingData) -> str | None:
    """Train until a budget, early stopping or the epoch limit ends the run; returns why it stopped, or None
    when interrupted (Ctrl-C / SIGTERM, handled at the next step boundary).

    ``last/`` is saved at the start of a new run (step 0), at every validation, every ``train.save_every``
    minutes and on an interrupt, always between two steps: a process killed at any moment loses at most the
    steps since the latest save, and ``--resume`` from that save is exact.
    """
    from tqdm import tqdm

    tcfg, state, dist = run.cfg.train, run.state, run.dist
    progress = tqdm(total=tcfg.max_steps or None, initial=state.step, unit="step", dynamic_ncols=True,
                    disable=None if dist.is_main else True)
    window = ThroughputWindow()
    bad_steps_in_row = 0
    run.clock.restart(state.elapsed_seconds)
    run.learner.model.train()
    span = tcfg.accumulate * dist.world_size  # batches per optimizer step, over all ranks
    try:
        with run.stop:
            if state.step == 0 and state.epoch == 0 and state.batch_in_epoch == 0:
                run.checkpoint()  # a run killed before its first validation can still be resumed
            if tcfg.max_steps and state.step >= tcfg.max_steps:  # resumed after the final validation's save
                return f"reached train.max_steps = {tcfg.max_steps}"
            if tcfg.max_minutes and state.step > 0 and state.elapsed_seconds >= tcfg.max_minutes * 60:
                return f"reached the time budget of {tcfg.max_minutes} minutes"
            while tcfg.max_epochs == 0 or state.epoch < tcfg.max_epochs:
                batches = epoch_batches(data.sampler, state.epoch)
                while state.batch_in_epoch < len(batches):
                    if run.stop_requested():  # a step boundary: weights, optimizer, RNG and counters agree
                        run.checkpoint()
                        return None
                    group = batches[state.batch_in_epoch : state.batch_in_epoch + span]
                    lr = run.schedule.step(state.step, run.progress())
                    share, counts = step_share(group, dist.rank, tcfg.accumulate)
                    micro_batches = [data.batch(indices).to(run.learner.device) for indices in share]
                    target_tokens, source_tokens = data.sampler.count_tokens(group)
                    loss = train_step(run.learner, micro_batches, target_tokens, counts, agree=run.agree)
                    state.batch_in_epoch += len(group)
                    if loss is None:
                        bad_steps_in_row += 1
                        logger.warning("non-finite loss at step %d: batch skipped (%d in a row)", state.step,
                                       bad_steps_in_row)
                        if bad_steps_in_row >= tcfg.max_bad_steps:
                            raise _too_many_bad_steps(run, bad_steps_in_row)
                        continue
                    bad_steps_in_row = 0
                    state.step += 1
                    state.target_tokens += target_tokens
                    window.add(loss, target_tokens, source_tokens)
                    progress.update(1)
                    if state.step % tcfg.log_every == 0:
                        record = {"type": "train", "step": state.step, "epoch": state.epoch, **window.record(),
                                  "lr": lr, "elapsed_min": round(run.clock.seconds() / 60, 2)}
                        run.log(record)
                        show_progress(progress, run, record)
                        window.reset()
                    total = estimated_total_steps(state.step, run.progress())
                    stop_reason = after_step(run, data, window, total)
                    if stop_reason is not None:
                        return stop_reason
                    if total is not None and tcfg.max_minutes:
                        progress.total = max(total, state.step)
                state.epoch += 1
                state.batch_in_epoch = 0
            validate_and_save(run, data)
            return f"reached train.max_epochs = {tcfg.max_epochs}"
    finally:
        progress.close()
        run.close_segment()


def after_step(run: Run, data: TrainingData, window: ThroughputWindow, total: int | None) -> str | None:
    """Validate (periodically and at the end of the budget) or save ``last/`` when due; returns why training
    stops (the budget ran out, early stopping), or None to go on. ``total`` is the number of steps the budget
    allows, as estimated after this step (None without a budget). Every rank decides alike: the clock is the one
    the ranks agreed on after the step."""
    tcfg, state = run.cfg.train, run.state
    out_of_steps = tcfg.max_steps and state.step >= tcfg.max_steps
    out_of_time = tcfg.max_minutes and run.clock.seconds() >= tcfg.max_minutes * 60
    # a periodic validation is skipped when the budget's final one is under half an interval away
    periodic = state.step % tcfg.valid_every == 0 and (total is None or total - state.step >= tcfg.valid_every / 2)
    if periodic or out_of_steps or out_of_time:
        validation_start = time.perf_counter()
        stop_early = validate_and_save(run, data)
        window.start += time.perf_counter() - validation_start  # tokens/s counts training time only
        if stop_early:
            return f"early stopping: no BLEU improvement in {tcfg.patience} validations"
    elif run.agreed is not None and run.agreed.save:
        run.checkpoint()
    if out_of_steps:
        return f"reached train.max_steps = {tcfg.max_steps}"
    if out_of_time:
        return f"reached the time budget of {tcfg.max_minutes} minutes"
    return None


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
        left = max(0.0, tcfg.max_minutes * 60 - run.clock.seconds())
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
    exit_process(main())
