"""Scoring a model during training: validation loss and validation BLEU/chrF.

Validation decodes greedily (the fastest search) and scores detokenized output with sacreBLEU, so the BLEU
that picks the best model is measured exactly as users' scores are. With a weight average (EMA) the trainer
validates both the raw and the averaged weights and keeps whichever scores higher.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from seq2seq.token_batches import TokenBatchSampler, collate
from seq2seq.config import Config, DecodeConfig
from seq2seq.decoding.driver import translate_ids
from seq2seq.decoding.options import DecodeOptions
from seq2seq.metrics import bleu_and_chrf
from seq2seq.model import Seq2Seq
from seq2seq.precision import ComputeDtypes, numerics
from seq2seq.tokenizer import Tokenizer

logger = logging.getLogger("seq2seq.train")


@dataclass
class ValidationSet:
    """The validation split as training uses it.

    Attributes:
        data: tokenized pairs (columns ``src_ids``, ``tgt_ids``, ``src_len``, ``tgt_len``) for the loss.
        src_ids: source ids (truncated as translation truncates them, ending in EOS) for BLEU.
        references: raw reference sentences, one per entry of ``src_ids``.
    """

    data: Any
    src_ids: list[list[int]]
    references: list[str]


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
        rows = dataset[indices]
        batch = collate(rows["src_ids"], rows["tgt_ids"]).to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            _, loss = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
        total_loss += float(loss)
        total_tokens += batch.num_tgt_tokens
    return total_loss / max(total_tokens, 1)


def validation_bleu(model: Seq2Seq, decode: DecodeConfig, src_ids: list[list[int]], references: list[str],
                    tgt_tok: Tokenizer, device: torch.device, amp: torch.dtype | None) -> dict:
    """Greedy BLEU/chrF of the model on the validation sources (detokenized, sacreBLEU)."""
    model.eval()
    hypotheses = translate_ids(model, src_ids, DecodeOptions.from_config(decode, beam_size=1, nbest=1), device=device,
                               autocast_dtype=amp)
    texts = tgt_tok.decode([hyps[0].tokens for hyps in hypotheses])
    return bleu_and_chrf(texts, references)


def validate(model: Seq2Seq, valid: ValidationSet, cfg: Config, tgt_tok: Tokenizer, device: torch.device,
             dtypes: ComputeDtypes) -> dict[str, float]:
    """Loss (in the training dtype), perplexity, greedy BLEU and chrF (in the decoding dtype, its TF32 switches
    included) of the model's current weights; leaves the model in eval mode."""
    loss = validation_loss(model, valid.data, cfg.train.max_tokens, device, dtypes.train_amp)
    with numerics(dtypes.decode):
        result = validation_bleu(model, cfg.decode, valid.src_ids, valid.references, tgt_tok, device,
                                 dtypes.decode_amp)
    return {"loss": loss, "ppl": math.exp(min(loss, 50)), "bleu": result["bleu"], "chrf": result["chrf"]}
