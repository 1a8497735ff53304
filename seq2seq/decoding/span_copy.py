"""Protected spans and glossary terms carried into the translation, and the check that reports the ones that are not.

:class:`~seq2seq.translator.Translator` uses three steps per input (see docs/preservation.md for the measurements
that chose them):

1. :func:`input_spans`: the glossary's terms (:mod:`seq2seq.glossary`), then the protected spans
   (:mod:`seq2seq.protected_spans`) that overlap none of them; :func:`read_spans` leaves out the spans past the
   pieces the model reads (``decode.max_src_length``): those cannot be translated and are reported.
2. Beam search places each span's target as a constraint phrase (:func:`constraint_words`; lexically constrained
   beam search); greedy search and sampling (and any span a search left out) go through :func:`restore`: the
   output words the attention aligns to the span are replaced by its target, or, when none align, the target is
   inserted after the words aligned to its nearest source neighbour.
3. :func:`check`: every span whose target is not verbatim in the output is ``missing``, never silently dropped.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any, Sequence

from seq2seq.decoding.alignment import argmax_source, piece_words
from seq2seq.glossary import Glossary
from seq2seq.protected_spans import RUN, TRAILING_PUNCTUATION, SourceWords, Span, find_spans, verbatim
from seq2seq.tokenizer import UNK_ID, Tokenizer

#: past the pieces the model reads, protected spans are looked for (and reported missing) this far into a line
SCANNED_CHARS = 2_000
LEADING_PUNCTUATION = "\"'([{«„“‘"
#: kinds put in next to the output, never over an output word: the model reads their characters as ``<unk>`` or
#: bytes, so the words attending to them are more often a neighbour's translation than an attempt at them
INSERTED_KINDS = frozenset({"rare"})


def input_spans(line: str, vocabulary: SourceWords | None, glossary: Glossary | None, protect: bool,
                protect_until: int | None = None) -> list[Span]:
    """The spans of ``line`` to carry over: glossary terms first, then (with ``protect``) protected spans (in
    ``line[:protect_until]``, a start made of whole words) that overlap none of them; in order."""
    spans = glossary.spans(line) if glossary else []
    if protect:
        spans += [s for s in find_spans(line[:protect_until], vocabulary)
                  if all(s.end <= g.start or s.start >= g.end for g in spans)]
    return sorted(spans, key=lambda s: s.start)


def _source_words(line: str) -> list[tuple[int, int]]:
    """(start, end) of each whitespace-separated word of ``line`` (``line.split()``)."""
    return [(m.start(), m.end()) for m in RUN.finditer(line)]


def _span_words(span: Span, words: list[tuple[int, int]]) -> list[int]:
    return [i for i, (start, end) in enumerate(words) if start < span.end and end > span.start]


def _whole_words_within(line: str, limit: int) -> int:
    """The length of the longest start of ``line`` of at most ``limit`` characters that cuts no word."""
    if limit >= len(line):
        return len(line)
    runs = list(RUN.finditer(line[:limit]))
    if runs and not line[limit].isspace():  # the last word goes on past the limit
        runs.pop()
    return runs[-1].end() if runs else 0


def read_head(line: str, src_tokenizer: Tokenizer, pieces_read: int) -> tuple[str, list[int]]:
    """(the start of ``line`` made of whole words that holds every source piece the model reads, the word of each
    of its pieces): a 14,000-character line cut to 40 pieces is segmented and searched only that far."""
    words = _source_words(line)
    count = pieces_read + 1  # each word is at least one piece: this many words hold the pieces read, and more
    while True:
        head = line[: words[min(count, len(words)) - 1][1]] if words else line
        piece_word = piece_words(head, src_tokenizer)
        if len(piece_word) > pieces_read or count >= len(words):  # (words of no piece: look further)
            return head, piece_word
        count *= 2


def read_spans(line: str, spans: list[Span], src_tokenizer: Tokenizer, pieces_read: int,
               read: tuple[str, list[int]] | None = None) -> tuple[list[Span], list[Span]]:
    """(spans within the first ``pieces_read`` source pieces, spans past them): the model never reads the latter.
    ``read``: :func:`read_head`'s answer for this line, when the caller has it already."""
    head, piece_word = read or read_head(line, src_tokenizer, pieces_read)
    if pieces_read >= len(piece_word):
        return spans, []
    # the last word read may be cut: only the words before it were read whole; a span is read whole when no word
    # after the last whole one starts before its end
    last_whole = piece_word[pieces_read] - 1
    words = _source_words(head)
    limit = words[last_whole + 1][0] if last_whole + 1 < len(words) else len(head)
    inside = [s.end <= limit for s in spans]
    return [s for s, read in zip(spans, inside) if read], [s for s, read in zip(spans, inside) if not read]


def constraint_words(spans: Sequence[Span], tgt_tokenizer: Tokenizer) -> list[str]:
    """The targets beam search can place as constraints: each once, those the target tokenizer spells without
    ``<unk>`` (an older tokenizer without byte fallback cannot spell every character)."""
    targets = list(dict.fromkeys(s.target for s in spans))
    encoded = tgt_tokenizer.encode(targets) if targets else []
    return [t for t, ids in zip(targets, encoded) if ids and UNK_ID not in ids]


def check(text: str, spans: Sequence[Span]) -> tuple[list[Span], list[Span]]:
    """(kept, missing): the spans whose target is verbatim in ``text``, and the others."""
    kept = [s for s in spans if verbatim(s, text)]
    return kept, [s for s in spans if s not in kept]


def _target_words(pieces: list[str]) -> list[int]:
    """The index of the (whitespace-separated) output word each target piece belongs to."""
    index, out = -1, []
    for piece in pieces:
        index += piece.startswith("\u2581") or index < 0
        out.append(index)
    return out


def _is_punctuation(word: str) -> bool:
    return not any(c.isalnum() for c in word)


def _split_punctuation(word: str) -> tuple[str, str, str]:
    """(leading punctuation, core, trailing punctuation) of an output word."""
    core = word.lstrip(LEADING_PUNCTUATION)
    lead = word[: len(word) - len(core)]
    stripped = core.rstrip(TRAILING_PUNCTUATION)
    return lead, stripped, core[len(stripped):]


def restore(text: str, tokens: Sequence[int], attention: Any, line: str, spans: Sequence[Span],
            src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, fixed_pieces: int = 0,
            src_piece_word: list[int] | None = None) -> str:
    """``text`` with each span that is not verbatim in it put in through the attention alignment.

    The output word most of whose pieces attend to the span's source words (and the aligned words right after it,
    as many as the target has words) are replaced by the span's target, keeping their outer punctuation; when
    none do, the target goes after the output words aligned to the nearest source word before the span (else
    before those of the nearest one after it, else at the end), ahead of their trailing punctuation. A ``rare`` span (:data:`INSERTED_KINDS`) goes right
    before the output word most of whose pieces attend to it, never over it. Words of the first ``fixed_pieces``
    pieces (a forced prefix), punctuation and words holding a kept span's target are never replaced.

    Args:
        tokens: the output's target piece ids; attention: (len(tokens) + 1, source pieces + 1) weights.
        src_piece_word: the source word of each piece the model read (:func:`read_head`), when the caller has it.
    """
    missing = [s for s in spans if not verbatim(s, text)]
    if not missing or attention is None or not tokens:
        return text
    tgt_word = _target_words([tgt_tokenizer.id_to_piece(t) for t in tokens])
    groups: list[list[int]] = [[] for _ in range(tgt_word[-1] + 1)]
    for token, word in zip(tokens, tgt_word):
        groups[word].append(token)
    words_out = [w.strip() for w in tgt_tokenizer.decode(groups)]  # each output word as the text spells it
    src_pieces = attention.shape[1] - 1
    if src_piece_word is None:
        src_piece_word = read_head(line, src_tokenizer, src_pieces)[1]
    src_piece_word = src_piece_word[:src_pieces]
    source_piece = argmax_source(attention, len(tokens), len(src_piece_word))
    aligned: dict[int, list[int]] = defaultdict(list)  # source word -> output words, in order
    for j, piece in enumerate(source_piece):
        if piece is not None:
            aligned[src_piece_word[piece]].append(tgt_word[j])
    fixed = set(tgt_word[:fixed_pieces])
    kept_targets = [s.target for s in spans if s not in missing]
    taken = fixed | {i for i, w in enumerate(words_out)
                     if _is_punctuation(w) or any(t in w for t in kept_targets)}
    source_words = _source_words(line)
    replace: dict[int, tuple[Span, int]] = {}  # first output word -> (span, last output word)
    insert_after: dict[int, list[Span]] = defaultdict(list)  # output word (-1: before the first) -> spans
    for span in missing:
        span_words = _span_words(span, source_words)
        votes = Counter(w for sw in span_words for w in aligned.get(sw, []) if w not in taken)
        best = max(votes, key=lambda w: (votes[w], -w)) if votes else None  # the word most pieces align to
        if best is not None and span.kind in INSERTED_KINDS:
            insert_after[max(best - 1, max(fixed, default=-1))].append(span)
            continue
        if best is not None:
            first = last = best
            while last + 1 in votes and last - first + 1 < len(span.target.split()):
                last += 1
            replace[first] = (span, last)
            taken |= set(range(first, last + 1))
            continue
        before = [max(aligned[w]) for w in range(min(span_words, default=0) - 1, -1, -1) if aligned.get(w)]
        after = [min(aligned[w]) for w in range(max(span_words, default=-1) + 1, len(source_words)) if aligned.get(w)]
        anchor = before[0] if before else (after[0] - 1 if after else len(words_out) - 1)
        insert_after[max(anchor, max(fixed, default=-1))].append(span)

    out = [s.target for s in insert_after.get(-1, [])]
    index = 0
    while index < len(words_out):
        word = words_out[index]
        if not word:  # a piece group that spells nothing (a lone "▁")
            out += [s.target for s in insert_after.get(index, [])]
            index += 1
            continue
        if index in replace:
            span, last = replace[index]
            lead, _, _ = _split_punctuation(word)
            _, _, trail = _split_punctuation(words_out[last])
            word, index = lead + span.target + trail, last
        inserted = [s.target for s in insert_after.get(index, [])]
        if inserted:
            lead, core, trail = _split_punctuation(word)
            out.append(" ".join([lead + core] + inserted) + trail if core else " ".join([word] + inserted))
        else:
            out.append(word)
        index += 1
    return re.sub(r"\s+", " ", " ".join(out)).strip()


def spans_of_inputs(lines: list[str], src_ids: list[list[int]], vocabulary: SourceWords | None,
                    glossary: Glossary, protect: bool, src_tokenizer: Tokenizer) -> list[tuple[list[Span], list[Span]]]:
    """Per line (spans within the pieces read, spans past them); ``src_ids``: each line's encoder input (with EOS)."""
    if not protect and not glossary:
        return [([], []) for _ in lines]
    out = []
    for line, ids in zip(lines, src_ids):
        # protected spans are looked for in what the model reads and, past a cut, up to SCANNED_CHARS characters
        # (reported missing: a sentence's worth; the rest of a longer line is not translated at all, and the log
        # says so); glossary terms, which the user asked for, in the whole line
        read = read_head(line, src_tokenizer, len(ids) - 1)  # segmented once, for both steps
        until = max(len(read[0]), _whole_words_within(line, SCANNED_CHARS))
        spans = input_spans(line, vocabulary if protect else None, glossary, protect, protect_until=until)
        out.append(read_spans(line, spans, src_tokenizer, len(ids) - 1, read))
    return out


def carry_spans(entry: list, line: str, spans: tuple[list[Span], list[Span]], src_tokenizer: Tokenizer,
                tgt_tokenizer: Tokenizer, prefix_pieces: int, keep_attention: bool) -> None:
    """Fill each :class:`~seq2seq.translation.Translation` of one input: its ``text`` with the read spans it lacks
    put in (:func:`restore`; tokens, score and attention stay the search's), ``kept`` and ``missing`` (the spans
    past the pieces read among them); the attention is dropped unless ``keep_attention``."""
    read, unread = spans
    src_piece_word = None  # segmented once per input, for all its hypotheses, and only when one lacks a span
    for translation in entry:
        if read and translation.attention is not None and any(not verbatim(s, translation.text) for s in read):
            if src_piece_word is None:
                src_piece_word = read_head(line, src_tokenizer, translation.attention.shape[1] - 1)[1]
            translation.text = restore(translation.text, translation.tokens, translation.attention, line, read,
                                       src_tokenizer, tgt_tokenizer, prefix_pieces, src_piece_word)
        translation.kept, missing = check(translation.text, read)
        translation.missing = missing + unread
        if not keep_attention:
            translation.attention, translation.src_pieces, translation.tgt_pieces = None, [], []
