"""A user glossary: source terms with the target term each must be translated as, and terms never to translate.

    glossary = Glossary.load("terms.tsv")      # "source term<TAB>target term" per line; a lone term: keep as is
    glossary = Glossary.of({"bike": "Fahrrad"}, keep=["Acme"])    # the Python API's and the service's form
    glossary.spans("A man rides a Bike.")      # [Span(14, 18, 'Bike', 'glossary', 'Fahrrad')]

Matching in the source: whole words, case-insensitive, the longest term first (``New York City`` before ``New
York``); a kept term's target is the source text as written in the input. The spans go to the same machinery as
protected spans (:mod:`seq2seq.decoding.span_copy`): constraints in beam search, restoration through the attention in greedy
search and sampling, and the final check that reports a term that is not in the translation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

from seq2seq.protected_spans import Span
from seq2seq.tokenizer import without_lone_surrogates

#: what the API and the service take: {source: target}, [(source, target), ...] or [[source, target], ...]
GlossaryInput = Union[Mapping[str, str], Sequence[Sequence[str]], "Glossary", None]


class GlossaryError(ValueError):
    """A glossary file or value that cannot be read: the message names FILE:LINE or the entry."""


@dataclass(frozen=True)
class Glossary:
    """``entries``: (source term, target term) pairs; a do-not-translate term has ``target`` None."""

    entries: tuple[tuple[str, str | None], ...] = ()
    _pattern: re.Pattern | None = field(default=None, compare=False, repr=False)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(cls, path: str | Path) -> "Glossary":
        """Read ``source<TAB>target`` lines (a line with one term: keep it verbatim); ``#`` comments and blank lines
        are skipped. :class:`GlossaryError` names ``FILE:LINE`` of the first bad line."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise GlossaryError(f"glossary {path}: cannot read it ({err})") from err
        entries = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = [f.strip() for f in raw.split("\t")]
            where = f"{path}:{number}"
            if len(fields) > 2:
                raise GlossaryError(f"{where}: {len(fields)} tab-separated fields; write 'source term<TAB>target "
                                    f"term', or one term to keep it untranslated")
            entries.append(_entry(fields[0], fields[1] if len(fields) == 2 else None, where))
        return cls.of(entries)

    @classmethod
    def of(cls, value: GlossaryInput = None, keep: Iterable[str] = ()) -> "Glossary":
        """A glossary from the API's forms: a dict, a list of (source, target) pairs, a :class:`Glossary`, or None;
        plus ``keep``, terms to copy untranslated. Later entries replace earlier ones of the same source term
        (case-insensitive). :class:`GlossaryError` names a bad entry."""
        pairs: list[tuple[str, str | None]] = []
        if isinstance(value, Glossary):
            pairs += value.entries
        elif isinstance(value, Mapping):
            pairs += [_entry(s, t, f"glossary entry {s!r}") for s, t in value.items()]
        elif value is not None:
            if isinstance(value, str):
                raise GlossaryError("glossary: give a dict {source: target} or a list of (source, target) pairs, "
                                    "not a string")
            for number, pair in enumerate(value):
                if isinstance(pair, str) or len(pair) not in (1, 2):
                    raise GlossaryError(f"glossary entry {number}: {pair!r} is not a (source, target) pair")
                pairs.append(_entry(pair[0], pair[1] if len(pair) == 2 else None, f"glossary entry {number}"))
        if isinstance(keep, str):
            keep = [keep]
        pairs += [_entry(term, None, f"do-not-translate term {term!r}") for term in keep]
        by_source: dict[str, tuple[str, str | None]] = {}
        for source, target in pairs:
            by_source.pop(source.casefold(), None)
            by_source[source.casefold()] = (source, target)
        return cls(tuple(by_source.values()))

    def merged(self, other: GlossaryInput = None, keep: Iterable[str] = ()) -> "Glossary":
        """This glossary with ``other``'s entries and ``keep`` on top (they win for the same source term)."""
        if not other and not keep:
            return self
        return Glossary.of(list(self.entries) + list(Glossary.of(other, keep).entries))

    def pattern(self) -> re.Pattern | None:
        """One regular expression of every source term, longest first, each a whole word, case-insensitive."""
        if not self.entries:
            return None
        if self._pattern is None:
            terms = sorted({s for s, _ in self.entries}, key=lambda s: (-len(s), s))
            body = "|".join(r"\s+".join(re.escape(w) for w in term.split()) for term in terms)
            object.__setattr__(self, "_pattern", re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE))
        return self._pattern

    def spans(self, line: str) -> list[Span]:
        """The glossary's terms in ``line`` as spans of kind ``glossary`` (target: the target term, or the text as
        written for a kept term), in order, none overlapping (the longest term wins at a position)."""
        pattern = self.pattern()
        if pattern is None:
            return []
        targets = {s.casefold(): t for s, t in self.entries}
        out = []
        for m in pattern.finditer(line):
            source = " ".join(m.group().split()).casefold()
            target = targets.get(source)
            out.append(Span(m.start(), m.end(), m.group(), "glossary", m.group() if target is None else target))
        return out


def _entry(source, target, where: str) -> tuple[str, str | None]:
    if not isinstance(source, str) or (target is not None and not isinstance(target, str)):
        raise GlossaryError(f"{where}: terms must be strings")
    source = " ".join(without_lone_surrogates(source).split())  # as the input is read; the output must be UTF-8
    if not source:
        raise GlossaryError(f"{where}: empty source term")
    if target is not None:
        target = " ".join(without_lone_surrogates(target).split())
        if not target:
            raise GlossaryError(f"{where}: empty target term (leave the tab and target out to keep "
                                f"{source!r} untranslated)")
    return source, target
