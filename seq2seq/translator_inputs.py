"""What a :class:`~seq2seq.translator.Translator` is asked, turned into ids and checked before any decoding: source
lines to piece ids (truncated with a warning), a call's decode overrides, prefixes, constraints and targets bounded
like the output. Each check raises one ValueError naming the setting or the input that is out of range."""

from __future__ import annotations

import logging
from typing import Sequence

from seq2seq.config import Config
from seq2seq.decoding.batching import source_ids
from seq2seq.decoding.options import DecodeOptions, check_batch_size, check_beam_size, check_nbest
from seq2seq.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


def per_input(value, count: int, name: str) -> list:
    """``value`` for every input (a str, or a list of str for constraints), or one entry per input."""
    if value is None:
        return [None] * count
    if isinstance(value, str) or (name == "constraints" and value and all(isinstance(v, str) for v in value)):
        return [value] * count
    value = list(value)
    if len(value) != count:
        raise ValueError(f"{name}: give one value for all inputs or one per input ({count}), got {len(value)}")
    return value


class TranslatorInputs:
    """The input side of :class:`~seq2seq.translator.Translator` (which sets these three attributes)."""

    cfg: Config
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer

    def encode_sources(self, lines: Sequence[str], numbers: Sequence[int] | None = None) -> list[list[int]]:
        """Source lines -> piece ids + EOS, truncated to ``decode.max_src_length`` pieces with a warning.

        ``numbers`` name the lines in that warning (default 1, 2, ...).
        """
        limit = self.cfg.decode.max_src_length
        numbers = range(1, len(lines) + 1) if numbers is None else numbers
        encoded = []
        for line_number, line, ids in zip(numbers, lines, self.src_tokenizer.encode(list(lines))):
            if len(ids) > limit:
                logger.warning(
                    "input %d (%r...) has %d source pieces; translating only the first %d (decode.max_src_length)",
                    line_number, line[:30], len(ids), limit,
                )
            encoded.append(source_ids(ids, limit))
        return encoded

    def decode_options(self, beam_size: int | None = None, nbest: int = 1, return_attention: bool = False,
                       batch_size: int | None = None, sampling: bool = False) -> DecodeOptions:
        """The model's ``decode`` settings with these overrides (None = the model's), checked: ValueError names
        the one out of range."""
        beam_size = self.cfg.decode.beam_size if beam_size is None else int(beam_size)
        check_beam_size(beam_size)
        check_nbest(nbest, beam_size, sampling)
        if batch_size is not None:
            check_batch_size(batch_size)
        return DecodeOptions.from_config(self.cfg.decode, beam_size=beam_size, nbest=nbest,
                                         return_attention=return_attention, batch_size=batch_size)

    def target_phrases(self, words: str | Sequence[str] | None) -> list[list[int]]:
        """Constraint words -> target piece id lists (each as it would appear after a space); ValueError naming the
        first word that has no target pieces."""
        words = [words] if isinstance(words, str) else list(words or [])
        phrases = self.tgt_tokenizer.encode([w.strip() for w in words]) if words else []
        for word, phrase in zip(words, phrases):
            if not phrase:
                raise ValueError(f"constraint {word!r} has no target pieces (empty?)")
        return phrases

    def max_target_pieces(self) -> int:
        """The most target pieces a prefix or a target to score may have: the longest translation any input may get,
        ``decode.max_len_a * decode.max_src_length + decode.max_len_b`` (user text is bounded like the output)."""
        decode = self.cfg.decode
        return int(decode.max_len_a * decode.max_src_length + decode.max_len_b)

    def check_target_lengths(self, pieces: Sequence[Sequence[int]], what: str,
                             numbers: Sequence[int] | None = None) -> None:
        """ValueError naming the first of ``pieces`` (target piece lists of ``what``, e.g. "prefix", numbered by
        ``numbers``, default 1, 2, ...) over :meth:`max_target_pieces`, before any decoding."""
        limit = self.max_target_pieces()
        numbers = range(1, len(pieces) + 1) if numbers is None else numbers
        for number, ids in zip(numbers, pieces):
            if len(ids) > limit:
                raise ValueError(f"{what} {number} has {len(ids)} target pieces; the limit is {limit} "
                                 "(decode.max_len_a * decode.max_src_length + decode.max_len_b, the longest "
                                 "translation the model may give)")

    def check_prefix(self, prefix: str | None) -> None:
        """ValueError when ``prefix`` is longer than :meth:`max_target_pieces`, before any decoding."""
        if prefix:
            self.check_target_lengths(self.tgt_tokenizer.encode([prefix]), "prefix")

    def check_constraints(self, words: Sequence[str]) -> None:
        """ValueError naming the first constraint that has no target pieces (e.g. ``" "``), before any decoding."""
        self.target_phrases(words)
