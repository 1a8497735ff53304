"""``--peers marian``: Marian NMT 1.12 (C++, the ``pymarian`` wheel) trained on this machine in the same run by
``../shared/peers/marian/run.sh SECONDS``, which trains its RNN (``--type s2s``: a bidirectional GRU encoder, Nematus'
conditional GRU decoder, separate 2k SentencePiece vocabularies it trains itself), then decodes and scores
test_2016_flickr greedy and with beam 5. Its stdout ends::

    marian_updates 600 in 1200 s
    marian_target_labels_per_s 594
    marian_test2016_bleu_greedy 27.9 (92.6 sent/s, whole process)
    marian_test2016_bleu_beam5 28.4 (26.5 sent/s, whole process)

Its figure counts target labels (pieces + EOS), as ours counts target tokens. The harness always keeps its run here
(``MARIAN_RUN``): its ``train.log`` says how many labels an update held, and its SentencePiece models
(``vocab.en.spm``, ``vocab.de.spm``) cut the corpus for the pieces per sentence. With ``--peer-decode`` its
``model.npz`` decodes our sentences through ``pymarian decode`` (:data:`MARIAN_DECODER`), plain text in and out, with
the harness's decoding options (``MARIAN_DECODE_ARGS`` adds or overrides options, later ones winning, e.g.
``MARIAN_DECODE_ARGS="--gemm-type packed8avx512"``), timed by Marian's own ``Total time`` and as a whole process.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from statistics import median
from typing import Any, Optional

from seq2seq.bench.peer_decoding import PeerDecoder
from seq2seq.bench.peers import PeerCorpus, PeerError, PeerToolkit, peer_dir

#: a progress line of Marian's log, "Ep. 1 : Up. 200 : Sen. 12,029 : Cost 4.65 : Time 158.90s : 695.99 words/s"
#: (with ``--cost-type ce-mean-words``), or with the labels since the line before after the cost, "Cost 5.71 *
#: 12,024 @ 1,088 after 12,024 : Time 3.79s : 3171.25 words/s" (``ce-sum``); "words" are target labels
PROGRESS = re.compile(r"Ep\. [\d.]+ : Up\. ([\d,]+) : Sen\. ([\d,]+) : Cost [\d.e+-]+(?: \* ([\d,]+) @ [\d,]+ "
                      r"after [\d,]+)? : Time ([\d.]+)s : ([\d.]+) words/s")
#: the harness's own decoding lines: "marian_test2016_bleu_beam5 28.4 (26.5 sent/s, whole process)"
HARNESS_DECODE = re.compile(r"^marian_test2016_bleu_(greedy|beam5) ([\d.]+) \(([\d.]+) sent/s")
#: what ``pymarian decode`` logs when it is done: "[2026-12-07 ...] Total time: 11.61852s wall"
TOTAL_TIME = re.compile(r"Total time: ([\d.]+)s wall")
#: decoding options of the harness (../shared/peers/marian/run.sh): length normalization, at most 1.5 x source
DECODE_OPTIONS = ["-n", "1", "--max-length-factor", "1.5", "--maxi-batch-sort", "src", "-w", "2000",
                  "--quiet-translation"]


def marian_batches(stdout: str, corpus: PeerCorpus, run: Optional[Path] = None) -> dict[str, Any]:
    """Real target labels and sentences per update: the median over the progress lines of ``run/train.log`` after
    the first (warm-up), each line's labels since the line before (as it counts them, or its labels/s times its
    seconds where it does not) and sentences since the line before (within an epoch), over its updates; and the
    harness's own greedy and beam-5 test figures (BLEU after the same minutes, sentences/s of its whole process)."""
    windows = []
    last_update, last_sentences = 0, 0
    log = run / "train.log" if run is not None else None
    text = log.read_text(encoding="utf-8", errors="replace") if log is not None and log.is_file() else ""
    for match in PROGRESS.finditer(text):
        update, sentences = (int(group.replace(",", "")) for group in match.groups()[:2])
        counted, seconds, rate = match.groups()[2:]
        labels = int(counted.replace(",", "")) if counted else float(seconds) * float(rate)
        if update > last_update:  # "Sen." counts from 0 again in each epoch: that window has no sentence figure
            per_update = (sentences - last_sentences) / (update - last_update) if sentences > last_sentences else None
            windows.append((labels / (update - last_update), per_update))
        last_update, last_sentences = update, sentences
    counted = windows[1:] or windows
    sentence_counts = [w[1] for w in counted if w[1] is not None]
    harness = {}
    for match in map(HARNESS_DECODE.match, stdout.splitlines()):
        if match:
            harness[match.group(1)] = {"bleu": float(match.group(2)), "process_sentences_per_s": float(match.group(3))}
    updates = re.findall(r"^marian_updates (\d+)", stdout, flags=re.M)
    return {
        "target_tokens_per_batch": median(w[0] for w in counted) if counted else None,
        "sentences_per_batch": median(sentence_counts) if sentence_counts else None,
        "batch_source": f"its log's progress lines ({len(counted)} of {len(windows)}, the first dropped): labels per "
                        "update" if windows else f"not in its log ({log or 'no run kept'}: no progress lines)",
        "updates": int(updates[-1]) if updates else None,
        "harness_test2016": harness,
    }


def marian_checkpoint(run: Path) -> Path:
    """The model the harness saved in ``run`` (on its SIGTERM at the end of the budget, and every 1,000 updates)."""
    model = run / "model.npz"
    if not model.is_file():
        raise PeerError(f"Marian saved no model in {run}: its harness saves on SIGTERM at the end of its budget; see "
                        f"{run / 'train.log'}")
    return model


def marian_vocabularies(model: Path) -> tuple[Path, Path]:
    """The SentencePiece models Marian trained beside ``model`` (source, target)."""
    return model.parent / "vocab.en.spm", model.parent / "vocab.de.spm"


def marian_translate(model: Path, source: Path, output: Path, batch_size: int, beam: int, threads: int) -> float:
    """Translate the text in ``source`` into ``output`` with ``pymarian decode`` (the harness's options, then
    ``$MARIAN_DECODE_ARGS``); the seconds of its own timer."""
    src_vocab, tgt_vocab = marian_vocabularies(model)
    command = [str(peer_dir() / "marian-venv" / "bin" / "pymarian"), "decode", "-m", str(model), "-v", str(src_vocab),
               str(tgt_vocab), "--cpu-threads", str(threads), "-b", str(beam), "--mini-batch", str(batch_size),
               "--maxi-batch", "100" if batch_size > 1 else "1", *DECODE_OPTIONS, "-i", str(source), "-o", str(output),
               *shlex.split(os.environ.get("MARIAN_DECODE_ARGS", ""))]
    done = subprocess.run(command, capture_output=True, text=True)
    times = TOTAL_TIME.findall(done.stdout + done.stderr)
    if done.returncode != 0 or not times:
        said = " | ".join((done.stderr.strip() or done.stdout.strip() or "(nothing)").splitlines()[-4:])
        raise PeerError(f"pymarian decode failed (exit {done.returncode}) on {model}: {said}")
    return float(times[-1])


MARIAN_DECODER = PeerDecoder(
    keep_model=lambda run: {"MARIAN_RUN": str(run)},
    checkpoint=marian_checkpoint,
    translate=marian_translate,
    spm_models=marian_vocabularies,
    raw_text=True,
)


MARIAN = PeerToolkit(
    name="marian",
    title="Marian 1.12.42",
    default_seconds=1200,
    batch_rule="--mini-batch-words 1000 target labels per worker, 2 workers (one per thread) per synchronous update",
    source_eos=True,
    read_batches=marian_batches,
    decoder=MARIAN_DECODER,
    harness="run.sh",
    figure="target_labels_per_s",
    own_vocabularies=True,
    peer_model=False,
    hint="Marian logs every 100 updates and saves its model on SIGTERM at the end of the budget: give --peer-seconds "
         "300 or more (the harness's install log: $PEER_DIR/marian-install.log)",
)
