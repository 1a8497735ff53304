"""Protected spans: the parts of a source line that must come out of translation verbatim.

    spans = find_spans("Zoë paid 12.50 at www.cafe.pl", SourceWords(src_tokenizer))
    # [Span(0, 3, 'Zoë', 'name', 'Zoë'), Span(9, 14, '12.50', 'number', '12.50'), Span(18, 29, ..., 'url', ...)]

Kinds, found in this order (an earlier kind wins where two overlap):

- ``url``: ``http(s)://...``, ``www....`` (trailing punctuation left out);
- ``email``: ``name@host.tld``;
- ``code``: a token mixing letters and digits, parts joined by ``-`` / ``_`` / ``/`` (``AB-1234``, ``A4``, ``X_9``);
- ``number``: digits with thousands separators, decimals, times or dates (``10,000``, ``3.14``, ``12:30``, ``1/2``);
- ``name``: a capitalized word (any script with case: ``Łukasz``, ``Дмитрий``) that is not a common word, and
  capitalized words next to it; a common word is one the source tokenizer spells as one piece in lower case
  (``known``). A sentence-initial capitalized word is a name when it has a letter outside ASCII (``Zoë``), when
  another capitalized word or ``and`` + a capitalized word follows it (``Anna Müller``, ``Zoë and Łukasz``), or
  when it is neither one of the English :data:`SENTENCE_STARTERS` nor ends in ``s`` (a plural: ``Swimmers``):
  sentences start with capitals, and a 2,000-piece vocabulary spells many common words (``Several``) in pieces;
- ``rare``: a word holding a character the source tokenizer has no piece for (a byte-fallback or ``<unk>`` piece:
  emoji, CJK ``東京``, ...), the whole whitespace-free run (trailing punctuation left out).

Each :class:`Span` carries the text it must appear as in the translation (``target``): the span itself, or a
glossary's target term (:mod:`seq2seq.glossary`). Pure text: the tokenizer enters only through
:class:`SourceWords`'s two questions.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from seq2seq.tokenizer import UNK_ID, Tokenizer

URL = re.compile(r"(?:https?://|www\.)[^\s<>\"]+", re.IGNORECASE)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
CODE = re.compile(r"(?<![\w@])(?=[\w/-]*\d)(?=[\w/-]*[^\W\d_])[^\W_]+(?:[-_/][^\W_]+)*(?![\w@])")
NUMBER = re.compile(r"(?<![\w.,:/])[+-]?\d+(?:[.,:/]\d+)*(?![\w])")
WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
RUN = re.compile(r"\S+")
TRAILING_PUNCTUATION = ".,;:!?)]}\"'»”’"
SENTENCE_END = re.compile(r"[.!?]\s*$")
#: English words that start sentences and that a small vocabulary may spell in several pieces: never names there
SENTENCE_STARTERS = frozenset("""
a an the this these those that there here they them their we you he she it i my our your his her its several
multiple some many few each every both another other others most all any no none while when where what who whom
which why how during after before inside outside behind beside near people something someone somebody nobody
everyone everybody anyone nothing one two three four five six seven eight nine ten twelve twenty hundred dozens
group crowd couple pair lots hello hi yes ok okay please thanks thank look looks let come go see
""".split())
KINDS = ("url", "email", "code", "number", "name", "rare", "glossary")
#: source languages whose nouns are all capitalized (ISO 639-1): no ``name`` spans there
NOUNS_CAPITALIZED = frozenset({"de", "lb"})


@dataclass(frozen=True)
class Span:
    """A part of the source line to keep: characters ``start:end`` (``text``), its ``kind``, and ``target``, the
    text it must appear as in the translation (``text`` itself unless a glossary says otherwise)."""

    start: int
    end: int
    text: str
    kind: str
    target: str

    def as_json(self) -> dict:
        return {"start": self.start, "end": self.end, "text": self.text, "kind": self.kind, "target": self.target}


class SourceWords:
    """What :func:`find_spans` asks of the source tokenizer, answered once per word or character (cached).

    ``capitalized_nouns``: the source language capitalizes every noun (German: :data:`NOUNS_CAPITALIZED`), so a
    capital letter says nothing of a name and ``name`` spans are not looked for (the other kinds still are).
    """

    def __init__(self, tokenizer: Tokenizer, capitalized_nouns: bool = False) -> None:
        self.tokenizer = tokenizer
        self.capitalized_nouns = capitalized_nouns
        self.known = functools.lru_cache(maxsize=65536)(self._known)
        self.rare = functools.lru_cache(maxsize=65536)(self._rare)
        self._unseen: set[int] | None = None  # the ids of <unk> and the byte pieces, once asked for

    def _known(self, word: str) -> bool:
        """A common word: one piece in lower case, or made of such words joined by hyphens (``T-shirt``)."""
        parts = [p for p in re.split(r"[-'’]", word.lower()) if p]
        return all(len(ids) == 1 for ids in self.tokenizer.encode(parts or [word.lower()]))

    def _rare(self, char: str) -> bool:
        """A character no piece covers: spelled as ``<unk>`` or as byte pieces."""
        if char.isspace():
            return False
        ids = self.tokenizer.encode([char])[0]
        return any(i == UNK_ID or _is_byte_piece(self.tokenizer.id_to_piece(i)) for i in ids)


    def rare_runs(self, runs: list[str]) -> list[bool]:
        """Per whitespace-free run, whether it holds a character no piece covers: one batched encode of all the
        runs (a character is spelled with byte pieces or ``<unk>`` inside a word exactly when it is alone)."""
        if self._unseen is None:
            self._unseen = {i for i in range(self.tokenizer.vocab_size)
                            if i == UNK_ID or _is_byte_piece(self.tokenizer.id_to_piece(i))}
        return [any(i in self._unseen for i in ids) for ids in self.tokenizer.encode(runs)] if runs else []


def _is_byte_piece(piece: str) -> bool:
    return len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")


def _strip_trailing(start: int, text: str) -> tuple[int, int]:
    """(start, end) of ``text`` at ``start`` without trailing punctuation (never empty)."""
    stripped = text.rstrip(TRAILING_PUNCTUATION) or text
    return start, start + len(stripped)


def _names(line: str, known: Callable[[str], bool]) -> Iterable[tuple[int, int]]:
    words = list(WORD.finditer(line))
    capital = [m.group()[0].isupper() and not known(m.group()) for m in words]
    initial = [i == 0 or bool(SENTENCE_END.search(line[: m.start()])) for i, m in enumerate(words)]

    def capitalized_next(i: int) -> bool:
        nxt = words[i + 1 : i + 3]
        if nxt and nxt[0].group()[0].isupper() and not initial[i + 1]:
            return True
        return len(nxt) == 2 and nxt[0].group().lower() == "and" and nxt[1].group()[0].isupper()

    is_name = []
    for i, m in enumerate(words):
        word = m.group()
        if not capital[i]:
            is_name.append(False)
        elif initial[i]:
            is_name.append(word.lower() not in SENTENCE_STARTERS and (
                any(ord(c) > 127 for c in word) or capitalized_next(i) or not word.endswith("s")))
        else:
            is_name.append(True)
    # a capitalized word right after a name, across one space, belongs to it (``Anna Müller``, ``New York``)
    for i in range(1, len(words)):
        if (not is_name[i] and is_name[i - 1] and words[i].group()[0].isupper()
                and line[words[i - 1].end() : words[i].start()] == " "):
            is_name[i] = True
    i = 0
    while i < len(words):
        if not is_name[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(words) and is_name[j + 1] and line[words[j].end() : words[j + 1].start()] == " ":
            j += 1
        end = words[j].end()
        if line[end - 2 : end] in ("'s", "’s"):  # a possessive is not part of the name: Zoë's -> Zoë
            end -= 2
        yield words[i].start(), end
        i = j + 1


def _rare_runs(line: str, vocabulary: "SourceWords | None") -> Iterable[tuple[int, int]]:
    runs = list(RUN.finditer(line)) if vocabulary is not None else []
    for m, rare in zip(runs, vocabulary.rare_runs([m.group() for m in runs]) if runs else []):
        if rare:
            # a leading quote or bracket is not part of it
            lead = len(m.group()) - len(m.group().lstrip("\"'([{«“‘"))
            if lead == len(m.group()):
                lead = 0
            yield _strip_trailing(m.start() + lead, m.group()[lead:])


def find_spans(line: str, vocabulary: SourceWords | None = None, kinds: Iterable[str] = KINDS) -> list[Span]:
    """The protected spans of ``line``, in order, none overlapping (see the module docstring for the kinds).

    Without ``vocabulary`` every capitalized word counts as uncommon and no character as rare.
    """
    kinds = set(kinds) - ({"name"} if vocabulary is not None and vocabulary.capitalized_nouns else set())
    known = vocabulary.known if vocabulary is not None else (lambda word: False)
    found: list[tuple[int, int, str]] = []
    if "url" in kinds:
        found += [(*_strip_trailing(m.start(), m.group()), "url") for m in URL.finditer(line)]
    if "email" in kinds and "@" in line:  # (the pattern backtracks over every long word: only where it can match)
        found += [(m.start(), m.end(), "email") for m in EMAIL.finditer(line)]
    if "code" in kinds:
        found += [(m.start(), m.end(), "code") for m in CODE.finditer(line)]
    if "number" in kinds:
        found += [(m.start(), m.end(), "number") for m in NUMBER.finditer(line)]
    if "name" in kinds:
        found += [(start, end, "name") for start, end in _names(line, known)]
    if "rare" in kinds:
        found += [(start, end, "rare") for start, end in _rare_runs(line, vocabulary)]
    return [Span(start, end, line[start:end], kind, line[start:end]) for start, end, kind in without_overlaps(found)]


def without_overlaps(found: list[tuple]) -> list[tuple]:
    """Keep, in list order (earlier wins), the ``(start, end, ...)`` entries that overlap none kept before; sorted
    by start."""
    kept: list[tuple] = []
    taken = bytearray(max((entry[1] for entry in found), default=0))  # 1 where a kept entry covers the character
    for entry in found:  # linear in the characters covered, whatever the number of entries (a 14,000-char line)
        if not any(taken[entry[0] : entry[1]]):
            kept.append(entry)
            taken[entry[0] : entry[1]] = b"\x01" * (entry[1] - entry[0])
    return sorted(kept, key=lambda e: e[0])


def verbatim(span: Span, text: str) -> bool:
    """Whether ``span.target`` appears in ``text``; digits and codes must not continue into more digits or letters
    (``5`` is not kept by ``15``), case is exact."""
    if span.kind in ("number", "code"):
        return re.search(r"(?<![\w])" + re.escape(span.target) + r"(?![\w])", text) is not None
    return span.target in text
