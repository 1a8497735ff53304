"""Corpus metrics on detokenized text: sacreBLEU BLEU and chrF with their signatures, and beside them the legacy
BLEU that older papers report.

:func:`bleu_and_chrf` compares hypotheses with references; :func:`translate_and_score` translates first (any object with
a ``translate(list[str], beam_size=, batch_size=, progress=)`` method, such as :class:`seq2seq.translator.Translator`) and
adds the decoding speed. :func:`legacy_bleu` is lowercased, Moses-tokenized BLEU (the ``tokenizer.perl -l LANG |
lowercase.perl | multi-bleu.perl`` pipeline of much of the NMT literature, e.g. the Multi30k results): a different
metric from sacreBLEU's (usually a few points higher), with its own signature, reported only to place a score
against such papers.
"""

from __future__ import annotations

import sys
import time
from typing import Sequence

from sacrebleu.metrics import BLEU, CHRF

#: the keys :func:`legacy_bleu` adds to a score
LEGACY_BLEU_KEYS = ("bleu_lc_moses", "bleu_lc_moses_signature", "bleu_lc_moses_detail")


def legacy_bleu(hypotheses: Sequence[str], references: Sequence[str], lang: str) -> dict:
    """Lowercased, Moses-tokenized corpus BLEU of detokenized text against one reference each.

    Hypotheses and references are tokenized by sacremoses' port of ``tokenizer.perl`` for ``lang`` (the target
    language; default options, no escaping: escaping maps tokens one to one, which leaves BLEU unchanged), then
    scored by sacreBLEU without further tokenization, lowercased. Returns ``bleu_lc_moses`` (float),
    ``bleu_lc_moses_signature`` (sacreBLEU's signature with ``tok:moses-LANG`` and the sacremoses version) and
    ``bleu_lc_moses_detail``.
    """
    import sacremoses
    from sacremoses import MosesTokenizer

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: they must pair up line by line")
    moses = MosesTokenizer(lang=lang)

    def tokenized(texts: Sequence[str]) -> list[str]:
        return [moses.tokenize(text, escape=False, return_str=True) for text in texts]

    bleu = BLEU(tokenize="none", lowercase=True, force=True)  # tokenized on purpose: no "forgot to detokenize" warning
    result = bleu.corpus_score(tokenized(hypotheses), [tokenized(references)])
    version = getattr(sacremoses, "__version__", "unknown")
    signature = str(bleu.get_signature()).replace("tok:none", f"tok:moses-{lang}+sacremoses-{version}")
    return {"bleu_lc_moses": round(result.score, 2), "bleu_lc_moses_signature": signature,
            "bleu_lc_moses_detail": str(result)}


def bleu_and_chrf(hypotheses: Sequence[str], references: Sequence[str], legacy_lang: str | None = None) -> dict:
    """Corpus BLEU and chrF of detokenized hypotheses against one reference each.

    Returns a dict with ``bleu``, ``chrf`` (floats), ``bleu_signature``, ``chrf_signature`` and ``sentences``;
    with ``legacy_lang`` (the target language) also :func:`legacy_bleu`'s keys.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: they must pair up line by line")
    if not references:
        raise ValueError("no sentences to score: BLEU and chrF need at least one hypothesis and reference")
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    result = {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_detail": str(bleu_score),
        "sentences": len(hypotheses),
    }
    if legacy_lang is not None:
        result.update(legacy_bleu(hypotheses, references, legacy_lang))
    return result


def sentence_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> list[float]:
    """sacreBLEU's sentence-level chrF (0-100) of each hypothesis against its reference."""
    from sacrebleu import sentence_chrf as chrf

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: they must pair up line "
                         "by line")
    return [chrf(hypothesis, [reference]).score for hypothesis, reference in zip(hypotheses, references)]


def confidence_ranking(translations: Sequence, references: Sequence[str]) -> dict:
    """How well the translations' ``confidence`` ranks them: ``confidence_spearman`` with sentence chrF, the mean
    confidence, the share flagged ``low_confidence`` and whether the confidence was calibrated."""
    from seq2seq.rank_metrics import spearman

    scored = [(t, r) for t, r in zip(translations, references) if t.confidence is not None]
    chrf = sentence_chrf([t.text for t, _ in scored], [r for _, r in scored])
    confidence = [t.confidence for t, _ in scored]
    return {"confidence_spearman": round(spearman(confidence, chrf), 4) if len(scored) > 1 else None,
            "confidence_mean": round(sum(confidence) / max(len(confidence), 1), 4),
            "low_confidence_share": round(sum(t.low_confidence for t, _ in scored) / max(len(scored), 1), 4),
            "confidence_calibrated": all(t.confidence_calibrated for t, _ in scored)}


def translate_and_score(translator, sources: Sequence[str], references: Sequence[str], beam_size: int,
                        batch_size: int | None = None, show_progress: bool = False,
                        legacy_lang: str | None = None, confidence: bool = False,
                        preserve: bool = True) -> tuple[list[str], dict]:
    """Translate ``sources`` and score against ``references`` (:func:`bleu_and_chrf`; ``legacy_lang`` adds the legacy
    BLEU); adds decoding time and speed to the result. ``show_progress``: a progress bar on stderr while
    translating. ``confidence``: the translator's ``generate`` computes each translation's confidence (timed with
    the decoding) and :func:`confidence_ranking`'s figures are added. ``preserve=False`` turns the translator's copy
    of protected spans off (passed only then)."""
    progress = None
    if show_progress:
        from tqdm import tqdm

        progress = tqdm(total=len(sources), unit="sentence", file=sys.stderr, dynamic_ncols=True, leave=False)
    start = time.perf_counter()
    try:
        update = progress.update if progress is not None else None
        copy = {} if preserve else {"preserve": False}
        if confidence:
            best = [entry[0] for entry in translator.generate(list(sources), beam_size=beam_size, batch_size=batch_size,
                                                              progress=update, **copy)]
            hypotheses = [translation.text for translation in best]
        else:
            hypotheses = translator.translate(list(sources), beam_size=beam_size, batch_size=batch_size,
                                              progress=update, **copy)
    finally:
        if progress is not None:
            progress.close()
    seconds = time.perf_counter() - start
    result = bleu_and_chrf(hypotheses, references, legacy_lang)
    result.update(
        beam_size=beam_size,
        decode_seconds=round(seconds, 2),
        sentences_per_second=round(len(sources) / max(seconds, 1e-9), 1),
    )
    if confidence:
        result.update(confidence_ranking(best, references))
    return hypotheses, result
