"""What the translation service reads and writes: the request schema, its limits, and results as JSON.

Needs the ``serve`` extra (pydantic comes with FastAPI); :mod:`seq2seq.serve` is the only importer.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from seq2seq.glossary import Glossary
from seq2seq.sentence_confidence import confidence_json
from seq2seq.translation import Translation
from seq2seq.translator import Translator
from seq2seq.config import MAX_BEAM_SIZE, DecodeConfig
from seq2seq.decoding.hypothesis import TraceStep
from seq2seq.tokenizer import EOS_ID, PAD_ID


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; each is a command-line flag of ``python -m seq2seq.serve``."""

    max_chars: int = 2000  #: characters per text (--max-chars)
    max_texts: int = 64  #: texts per request (--max-texts)
    max_body_bytes: int = 1_000_000  #: request body size (--max-body-bytes)
    max_beam_size: int = 16  #: largest beam_size a request may ask for (--max-beam-size)
    max_hypotheses: int = 64  #: hypotheses in one reply, texts x nbest (--max-hypotheses)
    max_reply_bytes: int = 8_000_000  #: reply size, checked before decoding on the worst case (--max-reply-bytes)
    max_glossary_terms: int = 256  #: glossary entries plus do-not-translate terms per request (--max-glossary-terms)

    def check(self) -> None:
        """Raise ``ValueError`` naming the flag of a limit below 1 or a beam over the API's maximum."""
        for name, value in asdict(self).items():
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.max_beam_size > MAX_BEAM_SIZE:
            raise ValueError(f"--max-beam-size must be at most {MAX_BEAM_SIZE} (the largest beam the search "
                             f"accepts), got {self.max_beam_size}")


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
    return_attention: bool = Field(False, description="add the attention matrix (target x source) with its source and "
                                   "target pieces, once per hypothesis: on each nbest entry when nbest > 1")
    return_beam: bool = Field(False, description="add the search step by step (the hypotheses kept at each step)")
    preserve: bool = Field(True, description="carry names, numbers, URLs, e-mail addresses, codes and rare characters "
                           "over verbatim; each entry lists them under kept and missing")
    glossary: dict[str, str] | list[Annotated[list[str], Field(min_length=1, max_length=2)]] | None = Field(
        None, description="source term -> target term ({source: target} or [[source, target], ...]; [term] = keep "
        "it untranslated), on top of the server's --glossary; a term not in the translation is listed in missing",
        examples=[{"bike": "Fahrrad"}])
    do_not_translate: list[str] = Field([], description="terms to copy untranslated")

    def texts(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text)

    def glossary_entries(self) -> tuple:
        """The request's glossary and do-not-translate terms, checked, as hashable (source, target or None) pairs;
        raises :class:`LimitExceeded` (422) naming a bad entry."""
        from seq2seq.glossary import Glossary, GlossaryError

        try:
            return Glossary.of(self.glossary, self.do_not_translate).entries
        except GlossaryError as err:
            raise LimitExceeded(str(err), status=422) from err


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
    terms = len(request.glossary or ()) + len(request.do_not_translate)
    if terms > limits.max_glossary_terms:
        raise LimitExceeded(f"{terms} glossary and do-not-translate terms in one request; the limit is "
                            f"{limits.max_glossary_terms} (--max-glossary-terms)")
    entries = request.glossary.items() if isinstance(request.glossary, dict) else (request.glossary or ())
    for term in [t for entry in entries for t in entry] + list(request.do_not_translate):
        if len(term) > limits.max_chars:
            raise LimitExceeded(f"a glossary term has {len(term)} characters; the limit is {limits.max_chars} "
                                f"(--max-chars)")
    if request.return_beam and len(texts) != 1:
        raise LimitExceeded("return_beam traces one text at a time; send a single text", status=422)
    hypotheses = len(texts) * request.nbest
    if hypotheses > limits.max_hypotheses:
        raise LimitExceeded(f"{len(texts)} texts x nbest {request.nbest} = {hypotheses} hypotheses in one reply; "
                            f"the limit is {limits.max_hypotheses} (--max-hypotheses): send fewer texts or a "
                            f"smaller nbest")
    return beam_size


#: bytes one item takes at most in the reply's JSON (compact separators): an attention weight rounded to 5
#: decimals (``0.12345,``), a token id (``12345,``), a hypothesis's score, confidence and field names
WEIGHT_BYTES, TOKEN_BYTES, HYPOTHESIS_BYTES = 8, 6, 260


def worst_case_reply_bytes(request: TranslateRequest, beam_size: int, src_lengths: list[int], decode: DecodeConfig,
                           piece_bytes: int) -> int:
    """An upper bound on the reply's size, before decoding: every hypothesis as long as the search allows
    (``max_len_a * source pieces + max_len_b``, what an untrained model produces), each piece ``piece_bytes``
    long (the longest target piece as JSON, with its separator).

    ``src_lengths``: source pieces per text, EOS included (what the search sees). Text, tokens and pieces, the
    attention (target x source weights) and the beam trace (per step up to ``beam_size`` kept and as many finished
    hypotheses, one per kept parent, each as long as the step) are counted when the request asks for them.
    """
    total = 64
    for src_length in src_lengths:
        steps = int(src_length * decode.max_len_a + decode.max_len_b)
        hypothesis = HYPOTHESIS_BYTES + steps * piece_bytes  # the text
        hypothesis += (steps + 1) * (piece_bytes + WEIGHT_BYTES)  # the confidence's pieces and piece_probs
        if request.return_scores or request.nbest > 1:
            hypothesis += steps * TOKEN_BYTES
        if request.return_attention:
            hypothesis += steps * (piece_bytes + src_length * WEIGHT_BYTES)
        total += (request.nbest + (request.nbest > 1)) * hypothesis  # the entry, plus its n-best list
        if request.return_attention:
            total += src_length * piece_bytes
        if request.return_beam:
            trace_pieces = steps * (steps + 3) // 2 * 2 * beam_size  # kept and finished ones (+ </s>), per step
            total += trace_pieces * piece_bytes + steps * 2 * beam_size * HYPOTHESIS_BYTES
    return total


def check_reply_size(request: TranslateRequest, beam_size: int, translator: Translator, limits: Limits) -> None:
    """Raise :class:`LimitExceeded` (413) when the worst-case reply (:func:`worst_case_reply_bytes`) is over
    ``limits.max_reply_bytes``; the decode never starts."""
    src_lengths = [len(ids) for ids in translator.encode_sources(request.texts())]
    tgt = translator.tgt_tokenizer
    piece_bytes = max(len(json.dumps(tgt.id_to_piece(i), ensure_ascii=False).encode()) for i in range(tgt.vocab_size))
    bound = worst_case_reply_bytes(request, beam_size, src_lengths, translator.cfg.decode, piece_bytes + 1)
    bound += (request.nbest + (request.nbest > 1)) * spans_bytes(request, translator)
    if bound > limits.max_reply_bytes:
        asked = ", ".join(name for name in ("return_attention", "return_beam") if getattr(request, name))
        raise LimitExceeded(
            f"the reply could reach {bound} bytes ({len(src_lengths)} texts of up to {max(src_lengths)} source pieces, "
            f"nbest {request.nbest}{', ' + asked if asked else ''}); the limit is {limits.max_reply_bytes} bytes "
            f"(--max-reply-bytes): send fewer or shorter texts, a smaller nbest, or leave out the attention or beam")


def spans_bytes(request: TranslateRequest, translator: Translator) -> int:
    """The bytes the texts' ``kept`` / ``missing`` lists take in one hypothesis (each span is in one of them)."""
    total = 0
    for read, unread in translator.spans(request.texts(), request.preserve, Glossary(request.glossary_entries())):
        total += 32 + sum(len(json.dumps(s.as_json(), ensure_ascii=False).encode()) + 1 for s in read + unread)
    return total


# ---------------------------------------------------------------------------- results as JSON
def finite_or_none(x: float) -> float | None:
    """JSON has no infinity: a hypothesis that never finished scores ``null``."""
    return x if math.isfinite(x) else None


def hypothesis_json(t: Translation, return_scores: bool, return_attention: bool, id_to_piece=None) -> dict[str, Any]:
    """One :class:`Translation` as the API's fields: text [, kept, missing] [, score, tokens] [, attention,
    tgt_pieces], and with ``id_to_piece`` its confidence (:func:`~seq2seq.sentence_confidence.confidence_json`);
    ``kept`` / ``missing`` when the input has protected spans or glossary terms."""
    out: dict[str, Any] = {"text": t.text}
    if t.kept or t.missing:  # the protected spans and glossary terms of the input: in the text, or not
        out.update(kept=[s.as_json() for s in t.kept], missing=[s.as_json() for s in t.missing])
    if id_to_piece is not None:
        out.update(confidence_json(t, id_to_piece))
    if return_scores:
        out["score"] = finite_or_none(t.score)
        out["tokens"] = list(t.tokens)
    if return_attention:
        out["attention"] = [] if t.attention is None else [[round(w, 5) for w in row] for row in t.attention.tolist()]
        out["tgt_pieces"] = list(t.tgt_pieces)
    return out


def entry_json(hypotheses: list[Translation], nbest: int, return_scores: bool, return_attention: bool,
               id_to_piece=None) -> dict[str, Any]:
    """One text's reply: the best hypothesis's text [, score, tokens]; with ``nbest > 1`` also ``nbest``, every
    hypothesis best first with text, score and tokens. The attention is sent once per hypothesis: with
    ``return_attention``, ``src_pieces`` (the text's) is on the entry, and ``attention`` (target x source) with
    ``tgt_pieces`` on the entry when ``nbest == 1``, else on each ``nbest`` hypothesis (never twice for the best)."""
    best = hypotheses[0]
    entry = hypothesis_json(best, return_scores, return_attention and nbest == 1, id_to_piece)
    if return_attention:
        entry["src_pieces"] = list(best.src_pieces)
    if nbest > 1:
        entry["nbest"] = [hypothesis_json(h, True, return_attention, id_to_piece) for h in hypotheses]
    return entry


def beam_steps(translator: Translator, trace: list[TraceStep]) -> list[dict[str, Any]]:
    """One text's search as it went (its records from :meth:`Translator.generate`'s ``trace``), for the web page:
    per step the kept hypotheses (pieces, summed log-probability) and those that finished there (pieces ending in
    ``</s>``, length-normalized score)."""
    piece = translator.tgt_tokenizer.id_to_piece

    def pieces(ids: list[int]) -> list[str]:
        return [piece(i) for i in ids if i not in (PAD_ID, EOS_ID)]

    steps = []
    for record in trace:
        kept = [{"pieces": pieces(tokens), "score": round(score, 4)}
                for tokens, score in zip(record.tokens[0].tolist(), record.scores[0].tolist())
                if math.isfinite(score)]
        finished = [{"pieces": pieces(tokens) + ["</s>"], "score": round(score, 4)}
                    for tokens, score, ends in zip(record.candidate_tokens[0].tolist(),
                                                   record.candidate_scores[0].tolist(),
                                                   record.finishing[0].tolist()) if ends]
        done = bool(record.done[0])
        steps.append({"kept": kept, "finished": finished, "done": done})
        if done:
            break
    return steps


def translate_batch(translator: Translator, key: tuple, texts: list[str]) -> list[dict[str, Any]]:
    """The batcher's decode: ``key`` = (beam_size, nbest, return_scores, return_attention, return_beam, preserve,
    glossary entries); one JSON entry per text (:func:`entry_json`, every hypothesis with its confidence), plus
    ``beam`` (:func:`beam_steps`) when asked for. One decode: with
    ``return_beam`` each text is decoded on its own and its trace is the search that gave its hypotheses."""
    beam_size, nbest, return_scores, return_attention, return_beam = key[:5]
    preserve, glossary = key[5:7] if len(key) >= 7 else (True, ())
    traces: list[list[TraceStep]] | None = [] if return_beam else None
    results = translator.generate(texts, beam_size=beam_size, nbest=nbest, return_attention=return_attention,
                                  trace=traces, preserve=preserve, glossary=Glossary(glossary))
    entries = []
    for number, hypotheses in enumerate(results):
        entry = entry_json(hypotheses, nbest, return_scores, return_attention, translator.tgt_tokenizer.id_to_piece)
        if traces is not None:
            entry["beam"] = beam_steps(translator, traces[number])
        entries.append(entry)
    return entries
