"""``--peer-decode``: a peer's model, trained in the same run by its harness, decodes the test split as ours does:
greedy and beam 5 at ``--batch-size``, then batch 1 over the first ``--latency-sentences``, each timed by the
toolkit's own timer (decoding only: not loading the model) and scored with sacreBLEU (13a, cased, detokenized), so
that every speed comes with the quality it was bought with.

A peer can be decoded when its harness keeps the model it trained: OpenNMT-py's does (``ONMT_RUN``,
``ONMT_SAVE_STEPS``: a checkpoint every :data:`~seq2seq.bench.opennmt.SAVE_EVERY_STEPS` steps, the last one kept),
and Marian's (``MARIAN_RUN``: its ``model.npz`` and SentencePiece models); JoeyNMT's deletes its run, so JoeyNMT is
trained but not decoded. Each toolkit decodes with its own defaults beyond the batch size and beam (OpenNMT-py:
length normalization off, at most 250 output pieces; Marian: its harness's options, length normalization on, at
most 1.5 x source; ours: the config's length penalty, at most 1.5 x source + 10).

Every decoding is also timed as a whole process (the peer's command, from its start to its exit: loading the
toolkit and the model included), the figure a user of the command line waits for.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from seq2seq.bench.peers import PeerError
from seq2seq.metrics import bleu_and_chrf

#: the searches compared, as bench_decoding names them: (name, beam size)
SEARCHES = (("greedy", 1), ("beam", 5))


@dataclass(frozen=True)
class PeerDecoder:
    """How to keep a peer's trained model and decode with it."""

    #: run folder -> environment for the harness, so that it trains into that folder and keeps its model there
    keep_model: Callable[[Path], dict[str, str]]
    #: run folder -> the model the harness kept (a PeerError when there is none)
    checkpoint: Callable[[Path], Path]
    #: (model, source file, output file, batch size, beam, threads) -> seconds by the toolkit's own timer;
    #: the output file then holds one line per source line: target pieces for source pieces, or text for text
    #: (:attr:`raw_text`)
    translate: Callable[[Path, Path, Path, int, int, int], float]
    #: model -> the (source, target) SentencePiece models it was trained with
    spm_models: Callable[[Path], tuple[Path, Path]]
    #: whether the toolkit reads and writes plain text (cutting it into pieces itself, as Marian does) rather than
    #: pieces
    raw_text: bool = False


def timed_translate(decoder: PeerDecoder, model: Path, source: Path, output: Path, batch_size: int, beam: int,
                    threads: int) -> tuple[float, float]:
    """Seconds by the toolkit's own timer and seconds of its whole process."""
    start = time.perf_counter()
    seconds = decoder.translate(model, source, output, batch_size, beam, threads)
    return seconds, time.perf_counter() - start


def decode_with_peer(decoder: PeerDecoder, model: Path, sources: list[str], references: list[str],
                     batch_size: int, latency_sentences: int, threads: int) -> dict:
    """The peer's greedy and beam-5 figures in :func:`~seq2seq.bench.decoding_speed.bench_decoding`'s layout: sentences/s,
    output pieces/s (pieces + EOS, cut by its own target model), words/s, BLEU, and the mean batch-1 latency (its
    timer over the sentences); and each also as a whole process (``process_sentences_per_s``,
    ``process_latency_mean_ms``)."""
    import sentencepiece as spm

    src_model, tgt_model = (spm.SentencePieceProcessor(model_file=str(path)) for path in decoder.spm_models(model))
    results: dict = {"model": str(model), "sentences": len(sources), "batch_size": batch_size,
                     "timer": "the toolkit's own (decoding only)"}
    count = min(latency_sentences, len(sources))
    with tempfile.TemporaryDirectory() as folder:
        src_file, latency_file, out_file = Path(folder, "src"), Path(folder, "latency_src"), Path(folder, "out")
        lines = sources if decoder.raw_text else [" ".join(src_model.encode(text, out_type=str)) for text in sources]
        src_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        latency_file.write_text("\n".join(lines[:count]) + "\n", encoding="utf-8")
        for name, beam in SEARCHES:
            seconds, process = timed_translate(decoder, model, src_file, out_file, batch_size, beam, threads)
            outputs = out_file.read_text(encoding="utf-8").splitlines()
            if len(outputs) != len(sources):
                raise PeerError(f"{model}: {len(outputs)} translations of {len(sources)} sentences in {out_file}")
            texts = outputs if decoder.raw_text else [tgt_model.decode(line.split()) for line in outputs]
            tokens = sum(len(tgt_model.encode(text)) + 1 for text in texts) if decoder.raw_text else \
                sum(len(line.split()) + 1 for line in outputs)
            results[name] = {"beam_size": beam, "seconds": seconds, "sentences_per_s": len(sources) / seconds,
                             "tokens_per_s": tokens / seconds, "mean_output_tokens": tokens / len(sources),
                             "words_per_s": sum(len(text.split()) for text in texts) / seconds,
                             "bleu": bleu_and_chrf(texts, references)["bleu"], "latency_sentences": 0,
                             "latency_mean_ms": None, "process_seconds": process,
                             "process_sentences_per_s": len(sources) / process, "process_latency_mean_ms": None}
            if count:
                single, single_process = timed_translate(decoder, model, latency_file, out_file, 1, beam, threads)
                results[name].update(latency_sentences=count, latency_mean_ms=single / count * 1000,
                                     process_latency_mean_ms=single_process / count * 1000)
    return results


def decoding_ratios(ours: dict, theirs: dict) -> dict[str, float]:
    """Our sentences/s and pieces/s over the peer's for each search, their BLEU difference, and the batch-1 latency
    ratio (> 1: ours is slower)."""
    ratios = {}
    for name, _ in SEARCHES:
        mine, peer = ours[name], theirs[name]
        ratios[f"{name} sentences/s"] = mine["sentences_per_s"] / peer["sentences_per_s"]
        ratios[f"{name} pieces/s"] = mine["tokens_per_s"] / peer["tokens_per_s"]
        if mine.get("bleu") is not None:
            ratios[f"{name} BLEU ours - theirs"] = mine["bleu"] - peer["bleu"]
        if mine.get("latency_mean_ms") and peer.get("latency_mean_ms"):
            ratios[f"{name} batch-1 mean latency"] = mine["latency_mean_ms"] / peer["latency_mean_ms"]
    return ratios
