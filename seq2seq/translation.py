"""What :meth:`seq2seq.translator.Translator.generate` returns: :class:`Translation`, one hypothesis of one input,
and :func:`translations_of`, which turns one input's search hypotheses into them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from seq2seq.decoding.hypothesis import Hypothesis
from seq2seq.protected_spans import Span
from seq2seq.tokenizer import Tokenizer


@dataclass
class Translation:
    """One translation hypothesis of one input.

    Attributes:
        text: detokenized translation.
        tokens: target piece ids (no BOS/EOS).
        score: length-normalized log-probability.
        attention: (len(tokens) + 1, source pieces + 1) weights (rows: target pieces then EOS; columns:
            source pieces then EOS), when asked for.
        src_pieces / tgt_pieces: the pieces that label the attention matrix.
        piece_probs: the model's probability of each output piece, then of EOS (an ensemble's: the exponent of its
            members' mean log-probability, what its search ranks by); empty when not computed.
        confidence: 0-1, an estimate of the translation's sentence chrF / 100 when ``confidence_calibrated``
            (the model directory's ``confidence.json``, see docs/confidence.md), else the geometric mean of
            ``piece_probs``; None for an empty input or when not computed.
        low_confidence: the confidence is below the calibration's threshold: unlikely to be right.
        confidence_features: the signals the confidence is computed from (by name).
        A restored translation (protected spans or glossary terms put in after the search) keeps the search's
        ``tokens``, ``score`` and ``attention``; only ``text`` has the spans.
        kept / missing: the input's protected spans and glossary terms (:class:`~seq2seq.protected_spans.Span`)
            that are verbatim in ``text``, and those that are not (reported, never silently dropped).
    """

    text: str
    tokens: list[int]
    score: float
    attention: Optional[Any] = field(default=None, repr=False)  # torch tensor; numpy array from --backend onnx
    src_pieces: list[str] = field(default_factory=list, repr=False)
    tgt_pieces: list[str] = field(default_factory=list, repr=False)
    piece_probs: list[float] = field(default_factory=list, repr=False)
    confidence: Optional[float] = None
    confidence_calibrated: bool = False
    low_confidence: bool = False
    confidence_features: dict[str, float] = field(default_factory=dict, repr=False)
    kept: list[Span] = field(default_factory=list, repr=False)
    missing: list[Span] = field(default_factory=list, repr=False)


def translations_of(src_ids: list[int], hypotheses: list[Hypothesis], attention: bool, src_tokenizer: Tokenizer,
                    tgt_tokenizer: Tokenizer) -> list[Translation]:
    """One input's hypotheses (its source ids ``src_ids``) as text, with the attention and the pieces that label it
    when ``attention``."""
    texts = tgt_tokenizer.decode([h.tokens for h in hypotheses])
    entry = []
    for text, hyp in zip(texts, hypotheses):
        translation = Translation(text=text, tokens=hyp.tokens, score=hyp.score)
        if attention:
            translation.attention = hyp.attention
            translation.src_pieces = [src_tokenizer.id_to_piece(i) for i in src_ids]
            translation.tgt_pieces = [tgt_tokenizer.id_to_piece(i) for i in hyp.tokens] + ["</s>"]
        entry.append(translation)
    return entry
