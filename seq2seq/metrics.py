"""Corpus metrics on detokenized text: sacreBLEU BLEU and chrF with their signatures.

:func:`score` compares hypotheses with references; :func:`translate_and_score` translates first (any object with
a ``translate(list[str], beam_size=, batch_size=, progress=)`` method, such as :class:`seq2seq.api.Translator`) and
adds the decoding speed.
"""

from __future__ import annotations

import sys
import time
from typing import Sequence

from sacrebleu.metrics import BLEU, CHRF


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus BLEU and chrF of detokenized hypotheses against one reference each.

    Returns a dict with ``bleu``, ``chrf`` (floats), ``bleu_signature``, ``chrf_signature`` and ``sentences``.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: they must pair up line by line")
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_detail": str(bleu_score),
        "sentences": len(hypotheses),
    }


def translate_and_score(translator, sources: Sequence[str], references: Sequence[str], beam_size: int,
                        batch_size: int | None = None, show_progress: bool = False) -> tuple[list[str], dict]:
    """Translate ``sources`` and score against ``references``; adds decoding time and speed to the result.
    ``show_progress``: a progress bar on stderr while translating."""
    progress = None
    if show_progress:
        from tqdm import tqdm

        progress = tqdm(total=len(sources), unit="sentence", file=sys.stderr, dynamic_ncols=True, leave=False)
    start = time.perf_counter()
    try:
        hypotheses = translator.translate(list(sources), beam_size=beam_size, batch_size=batch_size,
                                          progress=progress.update if progress is not None else None)
    finally:
        if progress is not None:
            progress.close()
    seconds = time.perf_counter() - start
    result = score(hypotheses, references)
    result.update(
        beam_size=beam_size,
        decode_seconds=round(seconds, 2),
        sentences_per_second=round(len(sources) / max(seconds, 1e-9), 1),
    )
    return hypotheses, result
