"""How sure the model is of its own outputs: per-piece probabilities and the sentence features a calibration reads.

After a search, the chosen outputs are run once more through the model, teacher-forced, in one batch
(:func:`forced_pass`), which gives each output piece's log-probability (then EOS's) and the attention. From those
tensors and the source ids, :func:`confidence_features` computes per sentence the "glass-box" signals of
Fomicheva et al. 2020 (arXiv 2005.10608) and a few source-side ones (out-of-domain input is fragmented into many
rare pieces):

==========================  =====================================================================================
``mean_log_prob``            sum of the pieces' (and EOS's) log-probabilities / their number
``min_log_prob``             the least probable piece's log-probability (floored at :data:`LOG_PROB_FLOOR`)
``low_prob_share``           share of pieces (and EOS) with probability below :data:`LOW_PROB`
``unattended_share``         share of source pieces (EOS not counted) whose attention, summed over the output,
                             is below :data:`ATTENDED`: parts of the input the output may have dropped
``length_ratio``             log(output pieces + 1) - log(source pieces + 1)
``pieces_per_word``          source pieces per whitespace-separated source word
``rare_piece_share``         share of source pieces that are ``<unk>`` or byte pieces
``source_piece_log_prob``    mean unigram log-probability of the source pieces under the source tokenizer
                             (rare pieces count as the vocabulary's least probable piece)
==========================  =====================================================================================

Everything here is tensors in, tensors out (no text, no model directory); the calibration that turns the features
into a confidence is :mod:`seq2seq.calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seq2seq.calibration import FEATURE_NAMES  # noqa: F401 (re-exported: the features computed here, in order)
from seq2seq.decoding.driver import pad_batch, sentence_batches
from seq2seq.decoding.ensemble import as_ensemble
from seq2seq.decoding.forced import score_targets
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID

#: a piece below this probability counts as a low-probability piece
LOW_PROB = 0.2
#: a source piece whose attention over the whole output sums below this counts as unattended
ATTENDED = 0.3
#: log-probabilities are floored here (an fp16 underflow or a forced piece must not dominate a fit)
LOG_PROB_FLOOR = -20.0


@dataclass
class SourcePieceStats:
    """What the source-side features need to know of each source piece id (both (V,) tensors)."""

    piece_log_prob: Tensor  #: the piece's unigram log-probability; rare pieces: the vocabulary's lowest
    rare: Tensor  #: True for ``<unk>`` and byte pieces

    @classmethod
    def of(cls, tokenizer) -> "SourcePieceStats":
        """From a :class:`~seq2seq.tokenizer.Tokenizer` (its pieces' scores and which pieces are rare)."""
        scores = torch.tensor(tokenizer.piece_log_probs(), dtype=torch.float32)
        rare = torch.tensor([tokenizer.is_rare_piece(i) for i in range(len(scores))])
        learned = scores[4:][~rare[4:]]
        lowest = float(learned.min()) if learned.numel() else 0.0
        return cls(piece_log_prob=scores.masked_fill(rare, lowest), rare=rare)


@torch.inference_mode()
def forced_pass(model, src: Tensor, src_lengths: Tensor, tgt: Tensor, tgt_lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Teacher-forced log-probabilities and attention of given outputs.

    Args:
        model: a Seq2Seq, a list of them, or an Ensemble (the members' log-probabilities and attention averaged,
            as the search averages them).
        src: (B, S) source ids (EOS-terminated), src_lengths (B,); tgt: (B, T) output piece ids, no BOS/EOS,
            right-padded with PAD; tgt_lengths (B,).
    Returns:
        token_log_probs: (B, T + 1) fp32, each piece's log-probability then EOS's, 0 past a row's end;
        attention: (B, T + 1, S) fp32 attention weights (rows past a row's end are not meaningful).

    Torch members run their decoder's whole teacher-forced ``forward`` in one call (one fused RNN call per layer where the
    architecture allows it); members without one (onnxruntime graphs) are stepped through
    :func:`~seq2seq.decoding.forced.score_targets`, the same forced scoring ``Translator.score`` uses.
    """
    ensemble = as_ensemble(model)
    batch_size, device = tgt.size(0), tgt.device
    rows = torch.arange(batch_size, device=device)
    gold = torch.cat([tgt, torch.full((batch_size, 1), PAD_ID, dtype=torch.long, device=device)], dim=1)
    gold[rows, tgt_lengths] = EOS_ID  # (B, T + 1): the pieces, then EOS
    if not all(isinstance(member, torch.nn.Module) for member in ensemble.models):
        return _stepped_pass(ensemble, src, src_lengths, tgt, tgt_lengths, gold)
    tgt_in = torch.cat([torch.full((batch_size, 1), BOS_ID, dtype=torch.long, device=device), tgt], dim=1)
    log_probs, attentions = [], []
    for member in ensemble.models:
        logits, attention = member.decoder(tgt_in, member.encode(src, src_lengths))
        log_probs.append(torch.log_softmax(logits.float(), dim=-1).gather(-1, gold.unsqueeze(-1)).squeeze(-1))
        attentions.append(attention.float())
    token_log_probs = torch.stack(log_probs).mean(dim=0).masked_fill(gold.eq(PAD_ID), 0.0)
    return token_log_probs, torch.stack(attentions).mean(dim=0)


def _stepped_pass(ensemble, src, src_lengths, tgt, tgt_lengths, gold) -> tuple[Tensor, Tensor]:
    scored = score_targets(ensemble, src, src_lengths, tgt, tgt_lengths, return_attention=True)
    token_log_probs = torch.zeros(gold.shape, dtype=torch.float32)
    attention = torch.zeros(gold.size(0), gold.size(1), src.size(1))
    for row, result in enumerate(scored):
        token_log_probs[row, : len(result.token_log_probs)] = torch.tensor(result.token_log_probs)
        attention[row, : result.attention.size(0), : result.attention.size(1)] = result.attention.float()
    return token_log_probs.to(gold.device), attention.to(gold.device)


def confidence_features(token_log_probs: Tensor, output_lengths: Tensor, attention: Tensor, src: Tensor,
                        src_lengths: Tensor, source_words: Tensor, vocabulary: SourcePieceStats) -> Tensor:
    """The features of :data:`FEATURE_NAMES`, one row per sentence.

    Args:
        token_log_probs: (B, T) log-probabilities of the output pieces then EOS (anything past a row's end).
        output_lengths: (B,) real positions per row: output pieces + 1 (EOS).
        attention: (B, T, S) attention weights of those positions over the source.
        src: (B, S) source ids, EOS-terminated, PAD after; src_lengths: (B,) with EOS.
        source_words: (B,) whitespace-separated words of each source text.
        vocabulary: the source pieces' scores and rarity.
    Returns:
        (B, len(FEATURE_NAMES)) fp32.
    """
    token_log_probs, attention = token_log_probs.float().cpu(), attention.float().cpu()
    output_lengths, src, src_lengths = output_lengths.cpu(), src.cpu(), src_lengths.cpu()
    positions = torch.arange(token_log_probs.size(1))
    real = positions.unsqueeze(0) < output_lengths.unsqueeze(1)  # (B, T)
    floored = token_log_probs.clamp(min=LOG_PROB_FLOOR)
    count = output_lengths.float()
    mean_log_prob = floored.masked_fill(~real, 0.0).sum(dim=1) / count
    min_log_prob = floored.masked_fill(~real, 0.0).min(dim=1).values
    low_prob_share = (real & (floored.exp() < LOW_PROB)).sum(dim=1) / count

    pieces = src_lengths - 1  # source pieces without EOS
    source_real = torch.arange(src.size(1)).unsqueeze(0) < pieces.unsqueeze(1)  # (B, S)
    received = attention.masked_fill(~real.unsqueeze(2), 0.0).sum(dim=1)  # (B, S): attention each piece got
    unattended = (source_real & (received < ATTENDED)).sum(dim=1) / pieces.clamp(min=1)

    length_ratio = torch.log(count) - torch.log(pieces.float() + 1.0)
    pieces_per_word = pieces.float() / source_words.float().clamp(min=1.0)
    ids = src.masked_fill(~source_real, 0)
    rare_share = (vocabulary.rare[ids] & source_real).sum(dim=1) / pieces.clamp(min=1)
    piece_log_prob = vocabulary.piece_log_prob[ids].masked_fill(~source_real, 0.0).sum(dim=1) / pieces.clamp(min=1)
    return torch.stack([mean_log_prob, min_log_prob, low_prob_share, unattended.float(), length_ratio,
                        pieces_per_word, rare_share.float(), piece_log_prob], dim=1)


@dataclass
class OutputAssessment:
    """One output's teacher-forced log-probabilities (pieces then EOS) and its features (:data:`FEATURE_NAMES`)."""

    token_log_probs: list[float]
    features: list[float]


def assess_outputs(model, src_ids: list[list[int]], outputs: list[list[int]], source_words: list[int],
                   vocabulary: SourcePieceStats, batch_size: int, device: torch.device | str = "cpu",
                   autocast_dtype: torch.dtype | None = None) -> list[OutputAssessment]:
    """:func:`forced_pass` and :func:`confidence_features` of outputs (piece ids, no BOS/EOS) of sources (ids
    ending in EOS), in length-sorted batches of ``batch_size``; results in input order. ``source_words``: per
    source, its whitespace-separated words."""
    if not len(src_ids) == len(outputs) == len(source_words):
        raise ValueError(f"{len(src_ids)} sources, {len(outputs)} outputs and {len(source_words)} word counts: "
                         "they must pair up one to one")
    ensemble, device = as_ensemble(model), torch.device(device)
    results: list[OutputAssessment | None] = [None] * len(src_ids)
    for indices in sentence_batches([len(src_ids[i]) + len(outputs[i]) for i in range(len(src_ids))], batch_size):
        src, src_lengths = pad_batch([src_ids[i] for i in indices], device)
        targets = [outputs[i] for i in indices]
        tgt = torch.full((len(targets), max(len(t) for t in targets)), PAD_ID, dtype=torch.long)  # T may be 0
        for row, target in enumerate(targets):
            tgt[row, : len(target)] = torch.tensor(list(target), dtype=torch.long)
        tgt_lengths = torch.tensor([len(t) for t in targets], device=device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            token_log_probs, attention = forced_pass(ensemble, src, src_lengths, tgt.to(device), tgt_lengths)
        words = torch.tensor([source_words[i] for i in indices])
        features = confidence_features(token_log_probs, tgt_lengths + 1, attention, src, src_lengths, words,
                                       vocabulary)
        for row, index in enumerate(indices):
            length = len(targets[row]) + 1
            results[index] = OutputAssessment(token_log_probs[row, :length].tolist(), features[row].tolist())
    return results
