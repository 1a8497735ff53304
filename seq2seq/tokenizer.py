"""SentencePiece tokenizers with fixed special ids.

Every model trained here has the same four special pieces at the same ids, so the rest of the code can use
the module constants instead of asking the tokenizer:

====  =======  ==========================================================
id    piece    meaning
====  =======  ==========================================================
0     ``<pad>``  padding (:data:`PAD_ID`); never produced by ``encode``
1     ``<unk>``  a character the model has never seen (:data:`UNK_ID`); never produced with byte fallback
2     ``<s>``    begin of sentence (:data:`BOS_ID`); the decoder's first input
3     ``</s>``   end of sentence (:data:`EOS_ID`); ends source and target
====  =======  ==========================================================

``encode`` returns piece ids only; where BOS/EOS go is the data pipeline's business (see seq2seq/data.py).
A model directory holds ``tokenizer.src.model`` and ``tokenizer.tgt.model`` (the same bytes when the
vocabulary is joint).

Tokenizers are trained with SentencePiece's byte fallback (``tokenizer.byte_fallback``, on by default): a
character no piece covers is spelled as its UTF-8 bytes (256 pieces ``<0x00>`` .. ``<0xFF>`` after the learned
ones), so every input character reaches the model and any text can be an output. Tokenizers trained without it
(older models) still load and map such characters to ``<unk>``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm

from seq2seq.config import ConfigError, TokenizerConfig

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_IDS = frozenset({PAD_ID, UNK_ID, BOS_ID, EOS_ID})
SRC_TOKENIZER_FILE = "tokenizer.src.model"
TGT_TOKENIZER_FILE = "tokenizer.tgt.model"

logger = logging.getLogger(__name__)


class TokenizerError(ValueError):
    """A tokenizer model that cannot be used (missing, corrupt, wrong special ids) or cannot be trained."""


def without_lone_surrogates(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD, so that it can be encoded as UTF-8 (how the tokenizer,
    the translator and the glossary read any text)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


class Tokenizer:
    """One SentencePiece model: text <-> piece ids, in batches.

    Build it with :meth:`load`, :meth:`from_bytes` or :func:`train_tokenizers`, not with the constructor.
    """

    def __init__(self, processor: spm.SentencePieceProcessor, model_bytes: bytes, source: str = "<bytes>") -> None:
        self._sp = processor
        self.model_bytes = model_bytes
        self.source = source
        found = (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id())
        if found != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise TokenizerError(
                f"{source}: SentencePiece model has special ids pad/unk/bos/eos = {found}, expected "
                f"{(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}; train the tokenizer with seq2seq (train_tokenizers) "
                "or with spm_train --pad_id=0 --unk_id=1 --bos_id=2 --eos_id=3"
            )

    def __getstate__(self) -> dict:
        """Pickled as its model bytes (for tokenizing in worker processes): the processor is rebuilt from them."""
        return {name: value for name, value in self.__dict__.items() if name != "_sp"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._sp = spm.SentencePieceProcessor()
        self._sp.LoadFromSerializedProto(self.model_bytes)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "Tokenizer":
        """A tokenizer from a serialized SentencePiece model (the content of a ``.model`` file)."""
        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(bytes(data))
        except (RuntimeError, OSError, TypeError) as err:
            raise TokenizerError(
                f"{source}: not a SentencePiece model ({err}); re-train the tokenizer or point to the right file"
            ) from None
        return cls(processor, bytes(data), source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load a ``.model`` file; raise :class:`TokenizerError` naming the file when it is missing or corrupt."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise TokenizerError(
                f"tokenizer model not found: {path}; a model directory must contain {SRC_TOKENIZER_FILE} and "
                f"{TGT_TOKENIZER_FILE} (written by training), or pass the path of a SentencePiece .model file"
            )
        return cls.from_bytes(path.read_bytes(), source=str(path))

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` atomically (a temporary file in the same directory, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.model_bytes)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @property
    def vocab_size(self) -> int:
        """Number of pieces, special pieces included (ids are ``0 .. vocab_size - 1``)."""
        return self._sp.get_piece_size()

    @property
    def byte_fallback(self) -> bool:
        """Whether characters outside the pieces are spelled as byte pieces (else they become ``<unk>``)."""
        return self._sp.piece_to_id("<0x00>") != UNK_ID and self._sp.is_byte(self._sp.piece_to_id("<0x00>"))

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Piece ids of each text, without BOS/EOS. Never fails on odd unicode (lone surrogates become U+FFFD)."""
        return self._sp.encode([without_lone_surrogates(t) for t in texts], out_type=int)

    def sample(self, texts: list[str], alpha: float, seeds: Iterable[int]) -> list[list[int]]:
        """One sampled segmentation (piece ids, without BOS/EOS) of each text, for subword regularization:
        unigram lattice sampling with smoothing ``alpha`` (``nbest_size=-1``) or BPE-dropout with merge-dropout
        probability ``alpha``, whichever this model's type is.

        Text i is segmented right after SentencePiece's generator is seeded with ``seeds[i]`` (each in
        ``[0, 2**32 - 2]``), so its segmentation is a pure function of (model, text, alpha, seed): the same
        whatever else is sampled before, after or in which chunks. Raises :class:`TokenizerError` when the
        installed SentencePiece cannot be reseeded so (checked once per process).
        """
        _check_reseedable(self)
        out = []
        for text, seed in zip(texts, seeds):
            spm.set_random_generator_seed(int(seed))
            out.append(self._sp.encode(without_lone_surrogates(text), out_type=int, enable_sampling=True, alpha=alpha, nbest_size=-1))
        return out

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Text of each id sequence: cut at the first EOS, PAD and BOS dropped (lists, arrays or tensors)."""
        cleaned = []
        for seq in ids:
            seq = seq.tolist() if hasattr(seq, "tolist") else [int(i) for i in seq]
            if EOS_ID in seq:
                seq = seq[: seq.index(EOS_ID)]
            cleaned.append([i for i in seq if i != PAD_ID and i != BOS_ID])
        # SentencePiece normalizes runs of spaces away in its input, so runs of lone "▁" pieces in
        # an output are never meant literally: collapse them.
        return [_SPACE_RUNS.sub(" ", text).strip(" ") for text in self._sp.decode(cleaned)]

    def pieces(self, texts: list[str]) -> list[list[str]]:
        """The pieces (subword strings, ``▁`` marks a preceding space) of each text."""
        return self._sp.encode([without_lone_surrogates(t) for t in texts], out_type=str)

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def piece_log_probs(self) -> list[float]:
        """Per id, the piece's score in the model: its unigram log-probability (0 for special and byte pieces;
        for BPE models, minus its merge rank)."""
        return [self._sp.get_score(i) for i in range(self.vocab_size)]

    def is_rare_piece(self, i: int) -> bool:
        """Whether id ``i`` is ``<unk>`` or a byte piece: a character the vocabulary does not cover."""
        return int(i) == UNK_ID or self._sp.is_byte(int(i))

    def __repr__(self) -> str:
        return f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size})"


_reseedable: bool | None = None


def _check_reseedable(tokenizer: Tokenizer) -> None:
    """Raise TokenizerError unless seeding SentencePiece's generator makes the next sampled segmentation
    repeatable in this thread (sentencepiece 0.2.3 reseeds it; a build whose per-thread generator is seeded only
    once, at its first use, would make sampled training batches, and so ``--resume``, irreproducible)."""
    global _reseedable
    if _reseedable is None:
        probe = "subword regularization samples another segmentation of this sentence every epoch"
        draws = []
        for _ in range(2):
            spm.set_random_generator_seed(12345)
            draws.append([tokenizer._sp.encode(probe, out_type=int, enable_sampling=True, alpha=0.5, nbest_size=-1)
                          for _ in range(4)])
        _reseedable = draws[0] == draws[1]
    if not _reseedable:
        raise TokenizerError(
            f"sentencepiece {getattr(spm, '__version__', '?')} does not restart its sampling generator when seeded, "
            "so sampled segmentations (tokenizer.sample_alpha / tokenizer.bpe_dropout) could not be reproduced on "
            "--resume; upgrade it (pip install -U sentencepiece) or set the sampling key to 0")


class _Sentences:
    """Cleaned, non-empty lines of an iterable, counted as they go by (SentencePiece reads it once)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = lines
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            line = without_lone_surrogates(line).strip()
            if line:
                self.count += 1
                yield line


#: byte fallback's pieces: one per byte value, ``<0x00>`` .. ``<0xFF>``
BYTE_PIECES = 256

#: below this fraction of the requested vocabulary size, a soft-limited vocabulary is an error
MIN_VOCAB_FRACTION = 0.9

_SPACE_RUNS = re.compile(r" {2,}")
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")


def _train_one(cfg: TokenizerConfig, lines: Iterable[str], side: str) -> Tokenizer:
    """Train one SentencePiece model on ``lines``; ``side`` names the data in error messages."""
    sentences = _Sentences(lines)
    model = io.BytesIO()
    # byte fallback's 256 byte pieces come on top of the learned ones, so vocab_size keeps its meaning
    vocab_size = cfg.vocab_size + (BYTE_PIECES if cfg.byte_fallback else 0)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type=cfg.type,
            vocab_size=vocab_size,
            byte_fallback=cfg.byte_fallback,
            character_coverage=cfg.character_coverage,
            input_sentence_size=cfg.input_sentence_size,
            shuffle_input_sentence=True,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_piece="<pad>",
            unk_piece="<unk>",
            bos_piece="<s>",
            eos_piece="</s>",
            user_defined_symbols=list(cfg.user_symbols),
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
            # soft limit: a corpus that supports slightly fewer pieces than asked still trains (checked below)
            hard_vocab_limit=False,
        )
    except RuntimeError as err:
        if sentences.count == 0:
            raise TokenizerError(
                f"cannot train the {side} tokenizer: the training text has no non-empty lines"
            ) from None
        too_high = _TOO_HIGH.search(str(err))
        if too_high:
            most = int(too_high.group(2)) - (vocab_size - cfg.vocab_size)
            raise ConfigError(
                f"tokenizer.vocab_size = {cfg.vocab_size} is too large for the {side} training text "
                f"({sentences.count} lines): SentencePiece ({cfg.type}) can build at most {most} pieces "
                f"from it; set tokenizer.vocab_size <= {most}"
            ) from None
        raise TokenizerError(f"SentencePiece training failed for the {side} tokenizer: {err}") from None
    tokenizer = Tokenizer.from_bytes(model.getvalue(), source=f"<trained {side} model>")
    learned = tokenizer.vocab_size - (vocab_size - cfg.vocab_size)
    if learned < MIN_VOCAB_FRACTION * cfg.vocab_size:
        raise ConfigError(
            f"tokenizer.vocab_size = {cfg.vocab_size} is too large for the {side} training text "
            f"({sentences.count} lines): SentencePiece ({cfg.type}) could build only {learned} pieces "
            f"from it; set tokenizer.vocab_size <= {learned}"
        )
    if learned < cfg.vocab_size:
        logger.warning("the %s text supports %d pieces, fewer than tokenizer.vocab_size = %d: using %d",
                       side, learned, cfg.vocab_size, learned)
    return tokenizer


def train_tokenizers(
    cfg: TokenizerConfig, src_lines: Iterable[str], tgt_lines: Iterable[str], out_dir: str | os.PathLike
) -> tuple[Tokenizer, Tokenizer]:
    """Train the source and target tokenizers and write them to ``out_dir``.

    One model per language, or, with ``cfg.joint``, one model trained on both sides and returned twice.
    Writes ``out_dir/tokenizer.src.model`` and ``out_dir/tokenizer.tgt.model`` (the same bytes when joint).
    Raises :class:`ConfigError` naming ``tokenizer.vocab_size`` when the text cannot support that many pieces.
    """
    start = time.perf_counter()
    if cfg.joint:
        joint = _train_one(cfg, _chain(src_lines, tgt_lines), "joint (source + target)")
        src_tok = tgt_tok = joint
    else:
        src_tok = _train_one(cfg, src_lines, "source")
        tgt_tok = _train_one(cfg, tgt_lines, "target")
    out_dir = Path(out_dir)
    src_tok.save(out_dir / SRC_TOKENIZER_FILE)
    tgt_tok.save(out_dir / TGT_TOKENIZER_FILE)
    if not cfg.joint:
        src_tok.source, tgt_tok.source = str(out_dir / SRC_TOKENIZER_FILE), str(out_dir / TGT_TOKENIZER_FILE)
    logger.info(
        "trained %s %s tokenizers (vocab %d / %d) in %.1fs -> %s",
        "joint" if cfg.joint else "separate", cfg.type, src_tok.vocab_size, tgt_tok.vocab_size,
        time.perf_counter() - start, out_dir,
    )
    return src_tok, tgt_tok


def _chain(*iterables: Iterable[str]) -> Iterator[str]:
    for lines in iterables:
        yield from lines


def load_tokenizers(model_dir: str | os.PathLike) -> tuple[Tokenizer, Tokenizer]:
    """The ``(source, target)`` tokenizers saved in a model directory."""
    model_dir = Path(model_dir).expanduser()
    src_path, tgt_path = model_dir / SRC_TOKENIZER_FILE, model_dir / TGT_TOKENIZER_FILE
    missing = [str(p) for p in (src_path, tgt_path) if not p.is_file()]
    if missing:
        raise TokenizerError(
            f"tokenizer model(s) not found: {', '.join(missing)}; is {model_dir} a model directory written by "
            "training (it holds config.yaml and both tokenizer models)?"
        )
    src_tok = Tokenizer.load(src_path)
    tgt_bytes = tgt_path.read_bytes()
    if tgt_bytes == src_tok.model_bytes:  # joint vocabulary
        return src_tok, src_tok
    return src_tok, Tokenizer.from_bytes(tgt_bytes, source=str(tgt_path))
