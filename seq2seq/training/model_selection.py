"""Which weights become the model: at each validation the raw weights and the weight average (EMA) are scored,
the better one is saved as the model directory when it beats the best so far, early stopping and the plateau
schedule hear the score, and ``last/`` is saved for an exact ``--resume``.
"""

from __future__ import annotations

import contextlib
import logging

from seq2seq.checkpoint import save_model_dir
from seq2seq.training.prepare import TrainingData
from seq2seq.training.run import Run
from seq2seq.training.validation import validate

logger = logging.getLogger("seq2seq.train")


def validate_weights(run: Run, data: TrainingData) -> dict[str, dict[str, float]]:
    """Validation scores of the raw weights, and of the weight average when one is kept."""
    cfg, model, average, device = run.cfg, run.learner.model, run.learner.average, run.learner.device
    scored = {"raw": validate(model, data.valid, cfg, data.tgt_tok, device, run.dtypes)}
    if average is not None:
        with average.swapped_in(model):
            scored["average"] = validate(model, data.valid, cfg, data.tgt_tok, device, run.dtypes)
    return scored


def validate_and_save(run: Run, data: TrainingData) -> bool:
    """Validate the raw weights (and the weight average), keep the best as the model directory, save ``last/``.

    Under torchrun rank 0 validates and every rank applies its scores (best score, early stopping, the plateau
    schedule), so that all ranks stay in step. Returns True when early stopping says stop.
    """
    cfg, state, model, average = run.cfg, run.state, run.learner.model, run.learner.average
    scored = run.dist.from_main(lambda: validate_weights(run, data), "validation")
    chosen = max(scored, key=lambda name: scored[name]["bleu"])  # ties: the raw weights
    result = scored[chosen]
    improved = result["bleu"] > state.best_bleu
    state.last_bleu = result["bleu"]
    if improved:
        state.best_bleu, state.best_step, state.best_weights = result["bleu"], state.step, chosen
        state.validations_without_improvement = 0
        if run.dist.is_main:
            with average.swapped_in(model) if chosen == "average" else contextlib.nullcontext():
                save_model_dir(run.out_dir, cfg, model, data.src_tok, data.tgt_tok)
    else:
        state.validations_without_improvement += 1
    run.schedule.on_validation(result["bleu"])
    record = {"type": "valid", "step": state.step, "epoch": state.epoch, "val_loss": round(result["loss"], 4),
              "val_ppl": round(result["ppl"], 2), "val_bleu": result["bleu"], "val_chrf": result["chrf"],
              "weights": chosen, "lr": run.learner.optimizer.param_groups[0]["lr"],
              "elapsed_min": round(run.clock.seconds() / 60, 2)}
    if average is not None:
        record.update(raw_bleu=scored["raw"]["bleu"], average_bleu=scored["average"]["bleu"])
    run.log(record)
    averaged = f" (average {scored['average']['bleu']:.2f}, raw {scored['raw']['bleu']:.2f})" if average else ""
    logger.info("validation at step %d: loss %.3f ppl %.2f BLEU %.2f chrF %.2f%s%s", state.step, result["loss"],
                result["ppl"], result["bleu"], result["chrf"], averaged, " (best)" if improved else "")
    model.train()
    run.checkpoint()
    return cfg.train.patience > 0 and state.validations_without_improvement >= cfg.train.patience
