"""``--peers``: other toolkits trained on this machine in the same run, one after another (never two at once), each
by its own harness (``../shared/peers/<name>/speed.sh SECONDS``, Marian's ``run.sh``), and our training speed over
theirs.

Each peer's module (``joeynmt.py``, ``opennmt.py``, ``marian.py``) describes it as a :class:`PeerToolkit`; what
they share is here: the workload the JoeyNMT and OpenNMT-py harnesses train (:data:`PEER_MODEL`, with the
SentencePiece unigram 8k models per language that they make in ``$PEER_DIR/spm``; Marian's harness trains its own
model with its own 2k models, kept in its run folder), running a harness and reading its figure line
(``<name>_target_tokens_per_s N``), the training split as a peer sees it (:class:`PeerCorpus`), FLOPs per target
token (where the peer's model is one of ours), and the ratios.

Every toolkit's tokens/s counts real target tokens (pieces + EOS), but each batch size counts something else:

- ours: ``train.max_tokens`` >= sentences x (longest source + longest target), padded positions, pairs of
  similar length batched together;
- OpenNMT-py 3.5.1: ``batch_size: 4096`` (``batch_type: tokens``) >= sentences x max(longest source, longest target
  with BOS and EOS), over length-sorted buckets: about 3,800 real target tokens a batch (its own ``bsz`` reports);
- JoeyNMT 2.3.0: ``batch_size: 4096`` (``batch_type: token``): a batch closes once sentences x max(source + 1,
  target + 1) reaches 4,096, over shuffled, unsorted pairs: about 1,830 real target tokens a batch (its log does
  not say: replayed from its rule over the corpus);
- Marian 1.12: ``--mini-batch-words 1000`` target labels (pieces + EOS) per worker, one worker per thread, the
  workers' batches summed into one synchronous update (``--sync-sgd``): its own log says how many labels an update
  held.

So equal nominal sizes are not equal work per step: the ratios say per variant and peer how the real target tokens
per batch compare, and which ``train.max_tokens`` would make them equal.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import numpy as np

from seq2seq.bench.flops import training_flops
from seq2seq.config import Config, ConfigError, ModelConfig
from seq2seq.data import read_split

if TYPE_CHECKING:
    from seq2seq.bench.peer_decoding import PeerDecoder

#: the peers' model (../shared/peers/*/config.template.yaml): GRU, 256 embeddings, a 2 x 256 bidirectional encoder,
#: a 512 decoder, Bahdanau (MLP) attention, input feeding, a bridge from the encoder's final state
PEER_MODEL = ModelConfig(rnn_type="gru", emb_size=256, encoder_hidden_size=256, encoder_layers=1, bidirectional=True,
                         decoder_hidden_size=512, decoder_layers=1, attention="bahdanau", input_feeding=True,
                         bridge="bridge", dropout=0.2)
#: entries in each side's vocabulary (the SentencePiece models' 8,000 pieces, specials included)
PEER_VOCAB_SIZE = 8000
#: both harnesses drop training pairs with more than this many pieces on either side
PEER_MAX_PIECES = 50
#: real target tokens per batch within this share of each other count as equal batches
EQUAL_BATCHES = 0.10


class PeerError(RuntimeError):
    """A peer could not be measured: the message says which harness and what to do."""


@dataclass(frozen=True)
class PeerCorpus:
    """The training split as the peers see it: SentencePiece pieces per sentence (no BOS or EOS) of the pairs that
    their length filter keeps."""

    src_pieces: np.ndarray
    tgt_pieces: np.ndarray

    @classmethod
    def load(cls, cfg: Config, models: tuple[Path, Path]) -> "PeerCorpus":
        """The training split cut by ``models`` (the source and target SentencePiece models a peer trained with)."""
        import sentencepiece as spm

        missing = [str(path) for path in models if not path.is_file()]
        if missing:
            raise PeerError(f"a peer's SentencePiece models are missing ({', '.join(missing)}): its harness makes "
                            "them on a first run; set PEER_DIR to where the harnesses keep theirs")
        raw = read_split(cfg.data, cfg.data.train_split)
        src = spm.SentencePieceProcessor(model_file=str(models[0])).encode(list(raw["src"]))
        tgt = spm.SentencePieceProcessor(model_file=str(models[1])).encode(list(raw["tgt"]))
        kept = [(len(s), len(t)) for s, t in zip(src, tgt) if len(s) <= PEER_MAX_PIECES and len(t) <= PEER_MAX_PIECES]
        return cls(np.array([s for s, _ in kept]), np.array([t for _, t in kept]))

    def target_pieces_per_sentence(self) -> float:
        """Real target tokens per sentence: pieces + EOS, what the toolkits' tokens/s count."""
        return float(np.mean(self.tgt_pieces + 1))

    def training_flops_per_target_token(self, source_eos: bool) -> float:
        """Analytic matmul FLOPs of training :data:`PEER_MODEL` (8k vocabularies) over this corpus, per real target
        token."""
        src = self.src_pieces + (1 if source_eos else 0)
        tgt = self.tgt_pieces + 1
        flops = training_flops(PEER_MODEL, PEER_VOCAB_SIZE, PEER_VOCAB_SIZE, int(src.sum()), int(tgt.sum()),
                               attention_pairs=int((src * tgt).sum()), sentences=len(tgt))
        return flops / int(tgt.sum())


@dataclass(frozen=True)
class PeerToolkit:
    """One peer: its ``--peers`` name (= its harness's folder in shared/peers/), how its batches are counted and how
    its real target tokens per batch are found."""

    name: str
    title: str
    #: the harness's own default budget in seconds (``--peer-seconds`` unset)
    default_seconds: int
    #: how its batch size counts, in the printed table
    batch_rule: str
    #: whether its source sequences end in EOS (what its encoder runs over)
    source_eos: bool
    #: (harness stdout, corpus, run folder or None) -> {"target_tokens_per_batch": float | None,
    #: "batch_source": str, ...}
    read_batches: Callable[[str, PeerCorpus, Optional[Path]], dict[str, Any]]
    #: what to do when the harness printed no figure (e.g. the budget was too short)
    hint: str
    #: how to keep its trained model and decode with it (``--peer-decode``), or None where its harness keeps none
    decoder: Optional["PeerDecoder"] = None
    #: its harness, in ``<peers dir>/<name>/``
    harness: str = "speed.sh"
    #: the harness's figure line is ``<name>_<figure> N``: real target tokens per second
    figure: str = "target_tokens_per_s"
    #: whether the harness must keep its run (its own SentencePiece models are there): then it always trains into
    #: ``$PEER_DIR/<name>-run``, and :attr:`decoder` says where the models are
    own_vocabularies: bool = False
    #: whether its model is :data:`PEER_MODEL`, so that its FLOPs per token can be counted as ours are
    peer_model: bool = True

    @property
    def figure_key(self) -> str:
        return f"{self.name}_{self.figure}"


def parse_peers(spec: str, known: dict[str, PeerToolkit]) -> list[PeerToolkit]:
    """``joeynmt,opennmt`` -> those toolkits, in that order (the order they are trained in)."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ConfigError(f"--peers: unknown peer(s) {', '.join(unknown) or '(none given)'}; known: "
                          f"{', '.join(known)} (comma-separated, e.g. --peers {','.join(known)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"--peers: each peer once, got {spec!r}")
    return [known[name] for name in names]


def harness_script(peers_dir: Path, toolkit: PeerToolkit) -> Path:
    """The harness's path, or a PeerError that names it and says where harnesses live."""
    script = peers_dir / toolkit.name / toolkit.harness
    if not script.is_file():
        raise PeerError(f"--peers {toolkit.name}: {script} not found: the peers' harnesses live in shared/peers/ "
                        f"beside the repository (../shared/peers/<name>/{toolkit.harness}); --peers-dir says where "
                        "else")
    return script


def peer_dir() -> Path:
    """Where the harnesses keep their installs and SentencePiece models: ``$PEER_DIR``, by default
    ``~/.cache/seq2seq-peers``."""
    return Path(os.environ.get("PEER_DIR", Path.home() / ".cache" / "seq2seq-peers"))


def shared_vocabularies() -> tuple[Path, Path]:
    """The SentencePiece models (en, de) the JoeyNMT and OpenNMT-py harnesses make and share in ``$PEER_DIR/spm``."""
    return peer_dir() / "spm" / "en.model", peer_dir() / "spm" / "de.model"


def run_harness(toolkit: PeerToolkit, script: Path, seconds: int, env: dict[str, str] | None = None) -> str:
    """Train the peer for ``seconds`` with its harness (``env`` added to the environment); its stdout, or a
    PeerError with its exit status and the end of what it said."""
    print(f"[{toolkit.name}] training {toolkit.title} for {seconds} s ({script}) ...", file=sys.stderr, flush=True)
    done = subprocess.run(["bash", str(script), str(seconds)], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})))
    if done.returncode != 0:
        said = " | ".join((done.stderr.strip() or done.stdout.strip() or "(nothing)").splitlines()[-4:])
        raise PeerError(f"{toolkit.title}: {script} {seconds} failed (exit {done.returncode}): {said}. {toolkit.hint}")
    return done.stdout


def harness_figure(stdout: str, toolkit: PeerToolkit) -> float:
    """The number on the harness's last ``<name>_target_tokens_per_s N`` line."""
    lines = [line.split() for line in stdout.splitlines() if line.startswith(toolkit.figure_key + " ")]
    try:
        return float(lines[-1][1])
    except (IndexError, ValueError):
        said = " | ".join(stdout.strip().splitlines()[-3:]) or "(nothing)"
        raise PeerError(f"{toolkit.title}: its harness printed no '{toolkit.figure_key} N' line (it said: {said}). "
                        f"{toolkit.hint}") from None


def peer_figures(toolkit: PeerToolkit, seconds: int, tokens_per_s: float, corpus: PeerCorpus,
                 batches: dict[str, Any], fp32_peak: float) -> dict[str, Any]:
    """One peer's figures: its target tokens/s (its own log), sentence pairs/s (over its pieces per sentence),
    real target tokens per batch, and achieved GFLOP/s as a share of this run's fp32 GEMM peak (the workload's
    analytic FLOPs, as for ours: work a toolkit repeats, such as OpenNMT-py's attention keys projected again at
    every decoder step, is not counted; None for a model that is not one of ours, such as Marian's)."""
    pieces = corpus.target_pieces_per_sentence()
    figures = {"toolkit": toolkit.title, "seconds": seconds, "target_tokens_per_s": tokens_per_s,
               "target_pieces_per_sentence": pieces, "sentences_per_s": tokens_per_s / pieces, **batches,
               "batch_rule": toolkit.batch_rule, "mflop_per_target_token": None, "achieved_gflops": None,
               "fraction_of_fp32_gemm_peak": None}
    if toolkit.peer_model:
        flops_per_token = corpus.training_flops_per_target_token(toolkit.source_eos)
        gflops = tokens_per_s * flops_per_token / 1e9
        figures.update(mflop_per_target_token=flops_per_token / 1e6, achieved_gflops=gflops,
                       fraction_of_fp32_gemm_peak=gflops / fp32_peak,
                       workload="Multi30k en-de, SentencePiece unigram 8k per language, GRU 256 / 2x256 bidirectional "
                                f"/ 512, Bahdanau, input feeding (../shared/peers/{toolkit.name}/config.template.yaml)")
    return figures


def measure_peers(toolkits: list[PeerToolkit], seconds: int | None, cfg: Config, peers_dir: Path,
                  fp32_peak: float, keep_models: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """Train each peer in turn (``seconds`` each, or its harness's default), yielding its name and figures as each
    is done (a later peer's PeerError leaves the earlier ones measured). With ``keep_models`` a peer whose harness
    can keep its model trains into ``$PEER_DIR/<name>-run`` (emptied first) and its figures name the model kept
    (``model``; None for a peer whose harness keeps none); a peer with its own vocabularies (Marian) always does,
    and its pieces per sentence are counted with them."""
    corpora: dict[tuple[Path, Path], PeerCorpus] = {}
    for toolkit in toolkits:
        budget = seconds or toolkit.default_seconds
        script = harness_script(peers_dir, toolkit)
        run, env = None, None
        if toolkit.decoder is not None and (keep_models or toolkit.own_vocabularies):
            run = peer_dir() / f"{toolkit.name}-run"
            shutil.rmtree(run, ignore_errors=True)
            env = toolkit.decoder.keep_model(run)
        stdout = run_harness(toolkit, script, budget, env)
        tokens_per_s = harness_figure(stdout, toolkit)
        models = toolkit.decoder.spm_models(toolkit.decoder.checkpoint(run)) if toolkit.own_vocabularies else \
            shared_vocabularies()
        if models not in corpora:  # a harness's first run makes its models
            corpora[models] = PeerCorpus.load(cfg, models)
        corpus = corpora[models]
        figures = peer_figures(toolkit, budget, tokens_per_s, corpus, toolkit.read_batches(stdout, corpus, run),
                               fp32_peak)
        if keep_models:
            figures["model"] = str(toolkit.decoder.checkpoint(run)) if run is not None else None
        yield toolkit.name, dict(figures, harness=str(script), harness_output=stdout.splitlines())


def matching_max_tokens(max_tokens: int, ours: float, theirs: float | None) -> int | None:
    """The ``train.max_tokens`` (a multiple of 64) at which our batches would hold about ``theirs`` real target
    tokens, given ``ours`` at ``max_tokens``."""
    return max(64, round(max_tokens * theirs / ours / 64) * 64) if theirs else None


def peer_ratios(peer: dict[str, Any], variants: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant of ours, over one peer: sentence pairs/s always; target tokens/s where the tokenization is the
    same (target pieces per sentence within 0.5); the two batches' real target tokens, whether they are equal
    (within :data:`EQUAL_BATCHES`) and the ``train.max_tokens`` that would make them about so (real target tokens
    grow roughly in proportion to it, a little slower: on the peers' corpus 1,970 at 4,096 and 3,824 at 8,192); and
    both shares of the GEMM peak (ours: of its compute dtype's peak)."""
    ratios = {}
    theirs = peer.get("target_tokens_per_batch")
    for v in variants:
        tr = v.get("train")
        if not tr:
            continue
        ours = tr["target_tokens_per_batch"]
        same_tokens = abs(tr["target_pieces_per_sentence"] - peer["target_pieces_per_sentence"]) < 0.5
        row: dict[str, Any] = {
            "sentences": tr["sentences_per_s"] / peer["sentences_per_s"],
            "target_tokens": tr["target_tokens_per_s"] / peer["target_tokens_per_s"] if same_tokens else None,
            "same_tokenization": same_tokens,
            "ours_target_tokens_per_batch": ours,
            "theirs_target_tokens_per_batch": theirs,
            "batch_ratio": ours / theirs if theirs else None,
            "equal_batches": bool(theirs) and abs(ours / theirs - 1) <= EQUAL_BATCHES,
            "max_tokens_for_equal_batches": matching_max_tokens(v["config"]["train"]["max_tokens"], ours, theirs),
            "ours_fraction_of_gemm_peak": tr["fraction_of_gemm_peak"],
            "ours_compute": tr["compute"],
            "theirs_fraction_of_fp32_gemm_peak": peer["fraction_of_fp32_gemm_peak"],
        }
        ratios[v["name"]] = row
    return ratios
