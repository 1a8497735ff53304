"""``--peers joeynmt`` (``--joeynmt SECONDS`` for short): JoeyNMT 2.3.0 trained on this machine in the same run by
``../shared/peers/joeynmt/speed.sh``, whose stdout is one line, the median of JoeyNMT's own "Tokens per Sec"
log lines (real target tokens incl. EOS)::

    joeynmt_target_tokens_per_s 519

Its log does not say what a batch holds, so the real target tokens per batch are replayed from JoeyNMT 2.3.0's
token batching (``TokenBatchSampler``) over the corpus as it sees it: pairs in shuffled order, no length bucketing,
a batch closing once sentences x max(source pieces + 1, target pieces + 1) reaches ``batch_size`` (4,096).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from seq2seq.bench.peers import PeerCorpus, PeerToolkit

#: ``training.batch_size`` of ../shared/peers/joeynmt/config.template.yaml (``batch_type: token``)
JOEYNMT_BATCH_SIZE = 4096


def replay_joeynmt_batches(src_pieces: np.ndarray, tgt_pieces: np.ndarray, batch_size: int,
                           order: np.ndarray) -> list[tuple[int, int]]:
    """JoeyNMT 2.3.0's token batches over the pairs taken in ``order``: (sentences, real target tokens = pieces +
    EOS) per batch. A pair joins the batch, then the batch closes if its sentences x its widest max(source + 1,
    target + 1) has reached ``batch_size``."""
    batches: list[tuple[int, int]] = []
    sentences = tokens = widest = 0
    for index in order:
        sentences += 1
        tokens += int(tgt_pieces[index]) + 1
        widest = max(widest, int(src_pieces[index]) + 1, int(tgt_pieces[index]) + 1)
        if widest * sentences >= batch_size:
            batches.append((sentences, tokens))
            sentences = tokens = widest = 0
    if sentences:
        batches.append((sentences, tokens))
    return batches


def joeynmt_batches(stdout: str, corpus: PeerCorpus, run: Optional[Path] = None) -> dict[str, Any]:
    """Mean real target tokens and sentences per batch over one epoch in a shuffled order, replayed (the harness's
    output does not carry them)."""
    order = np.random.default_rng(0).permutation(len(corpus.tgt_pieces))
    batches = replay_joeynmt_batches(corpus.src_pieces, corpus.tgt_pieces, JOEYNMT_BATCH_SIZE, order)
    return {"target_tokens_per_batch": sum(t for _, t in batches) / len(batches),
            "sentences_per_batch": sum(s for s, _ in batches) / len(batches),
            "batch_source": "its batching replayed over one shuffled epoch (its log does not say)"}


JOEYNMT = PeerToolkit(
    name="joeynmt",
    title="JoeyNMT 2.3.0",
    default_seconds=150,
    batch_rule="closes at sentences x max(source + 1, target + 1) >= 4096; shuffled, unsorted",
    source_eos=True,
    read_batches=joeynmt_batches,
    hint="JoeyNMT logs every 10 steps and its harness drops the first log line: give --peer-seconds 120 or more "
         "(the harness's install log: $PEER_DIR/install.log)",
)
