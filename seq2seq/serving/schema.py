"""What the translation service reads and writes: the request schema, its limits, and results as JSON.

Needs the ``serve`` extra (pydantic comes with FastAPI); :mod:`seq2seq.serve` is the only importer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from seq2seq.api import Translation, Translator
from seq2seq.tokenizer import EOS_ID, PAD_ID


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; each is a command-line flag of ``python -m seq2seq.serve``."""

    max_chars: int = 2000  #: characters per text (--max-chars)
    max_texts: int = 64  #: texts per request (--max-texts)
    max_body_bytes: int = 1_000_000  #: request body size (--max-body-bytes)
    max_beam_size: int = 16  #: largest beam_size a request may ask for (--max-beam-size)


class LimitExceeded(Exception):
    """A request over one of the :class:`Limits` (HTTP 413) or otherwise unacceptable (``status``, e.g. 422)."""

    def __init__(self, message: str, status: int = 413) -> None:
        super().__init__(message)
        self.status = status


class TranslateRequest(BaseModel):
    """``POST /translate`` body. Types are strict: ``"3"`` is not a beam size, ``1`` is not ``true``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | Annotated[list[str], Field(min_length=1)] = Field(
        description="one text, or a non-empty list of texts (answers come back in the same order)",
        examples=["A man is riding a bike."])
    beam_size: int | None = Field(None, ge=1, description="1 = greedy search; default: the model's decode.beam_size")
    nbest: int = Field(1, ge=1, description="hypotheses per text, best first (at most beam_size)")
    return_scores: bool = Field(False, description="add score (length-normalized log-probability) and tokens")
    return_attention: bool = Field(False, description="add the attention matrix with its source and target pieces")
    return_beam: bool = Field(False, description="add the search step by step (the hypotheses kept at each step)")

    def texts(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text)


def check_limits(request: TranslateRequest, limits: Limits, default_beam_size: int) -> int:
    """Raise :class:`LimitExceeded` naming the limit; returns the beam size to use."""
    texts = request.texts()
    if len(texts) > limits.max_texts:
        raise LimitExceeded(f"{len(texts)} texts in one request; the limit is {limits.max_texts} (--max-texts)")
    for number, text in enumerate(texts):
        if len(text) > limits.max_chars:
            raise LimitExceeded(f"text {number} has {len(text)} characters; the limit is {limits.max_chars} "
                                f"per text (--max-chars)")
    beam_size = default_beam_size if request.beam_size is None else request.beam_size
    if beam_size > limits.max_beam_size:
        raise LimitExceeded(f"beam_size {beam_size} is out of range: 1 to {limits.max_beam_size} (--max-beam-size)",
                            status=422)
    if request.nbest > beam_size:
        raise LimitExceeded(f"nbest {request.nbest} is larger than beam_size {beam_size}; ask for at most "
                            f"beam_size hypotheses", status=422)
    return beam_size


# ---------------------------------------------------------------------------- results as JSON
def finite_or_none(x: float) -> float | None:
    """JSON has no infinity: a hypothesis that never finished scores ``null``."""
    return x if math.isfinite(x) else None


def hypothesis_json(t: Translation, return_scores: bool, return_attention: bool) -> dict[str, Any]:
    """One :class:`Translation` as the API's fields: text [, score, tokens] [, attention, src/tgt pieces]."""
    out: dict[str, Any] = {"text": t.text}
    if return_scores:
        out["score"] = finite_or_none(t.score)
        out["tokens"] = list(t.tokens)
    if return_attention:
        out["attention"] = [] if t.attention is None else [[round(w, 5) for w in row] for row in t.attention.tolist()]
        out["src_pieces"] = list(t.src_pieces)
        out["tgt_pieces"] = list(t.tgt_pieces)
    return out


def beam_steps(translator: Translator, trace: list[dict]) -> list[dict[str, Any]]:
    """One text's search as it went (its records from :meth:`Translator.generate`'s ``trace``), for the web page:
    per step the kept hypotheses (pieces, summed log-probability) and those that finished there (pieces ending in
    ``</s>``, length-normalized score)."""
    piece = translator.tgt_tokenizer.id_to_piece

    def pieces(ids: list[int]) -> list[str]:
        return [piece(i) for i in ids if i not in (PAD_ID, EOS_ID)]

    steps = []
    for record in trace:
        kept = [{"pieces": pieces(tokens), "score": round(score, 4)}
                for tokens, score in zip(record["tokens"][0].tolist(), record["scores"][0].tolist())
                if math.isfinite(score)]
        finished = [{"pieces": pieces(tokens) + ["</s>"], "score": round(score, 4)}
                    for tokens, score, ends in zip(record["candidate_tokens"][0].tolist(),
                                                   record["candidate_scores"][0].tolist(),
                                                   record["finishing"][0].tolist()) if ends]
        done = bool(record["done"][0])
        steps.append({"kept": kept, "finished": finished, "done": done})
        if done:
            break
    return steps


def translate_batch(translator: Translator, key: tuple, texts: list[str]) -> list[dict[str, Any]]:
    """The batcher's decode: ``key`` = (beam_size, nbest, return_scores, return_attention, return_beam); one JSON
    entry per text: the best hypothesis's fields, plus ``nbest`` (all hypotheses) when nbest > 1 and ``beam``
    (:func:`beam_steps`) when asked for. One decode: with ``return_beam`` each text is decoded on its own and its
    trace is the search that gave its hypotheses."""
    beam_size, nbest, return_scores, return_attention, return_beam = key
    traces: list[list[dict]] | None = [] if return_beam else None
    results = translator.generate(texts, beam_size=beam_size, nbest=nbest, return_attention=return_attention,
                                  trace=traces)
    entries = []
    for number, hypotheses in enumerate(results):
        entry = hypothesis_json(hypotheses[0], return_scores, return_attention)
        if nbest > 1:
            entry["nbest"] = [hypothesis_json(h, True, return_attention) for h in hypotheses]
        if traces is not None:
            entry["beam"] = beam_steps(translator, traces[number])
        entries.append(entry)
    return entries
