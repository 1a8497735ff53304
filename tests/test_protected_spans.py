"""Protected-span detection, glossary files and matching, and the restoration through a hand-made attention: every
expectation written by hand."""

from __future__ import annotations

import pytest
import torch

from seq2seq.glossary import Glossary, GlossaryError
from seq2seq.protected_spans import SourceWords, Span, find_spans, verbatim
from seq2seq.decoding.span_copy import check, input_spans, read_spans, restore


def spans_of(line: str, vocabulary=None) -> list[tuple[str, str]]:
    return [(s.text, s.kind) for s in find_spans(line, vocabulary)]


@pytest.mark.parametrize("line, expected", [
    ("Zoë and Łukasz walk past the café in Kraków.", [("Zoë", "name"), ("Łukasz", "name"), ("Kraków", "name")]),
    ("Дмитрий met Frau Müller at 10:30.", [("Дмитрий", "name"), ("Frau Müller", "name"), ("10:30", "number")]),
    ("You can mail bob.smith@example.com or see https://example.org/a?b=1.",
     [("bob.smith@example.com", "email"), ("https://example.org/a?b=1", "url")]),
    ("Order AB-1234 costs 1,299.50 dollars at www.shop.de, not 7.", [("AB-1234", "code"), ("1,299.50", "number"),
                                                                    ("www.shop.de", "url"), ("7", "number")]),
    ("New York is big. Anna Smith lives there.", [("New York", "name"), ("Anna Smith", "name")]),
    ("A man in a red shirt rides a bike.", []),  # sentence-initial capitals are not names
    ("Several people walk. This is nice. Swimmers swim.", []),  # English sentence starters, plurals
    ("Anna rides a bike. Zoë's dog runs.", [("Anna", "name"), ("Zoë", "name")]),
    ("Hello, how are you?", []),
])
def test_detects_urls_emails_codes_numbers_and_names_without_a_tokenizer(line, expected):
    assert spans_of(line) == expected


def test_offsets_and_target_are_the_text_itself():
    line = "Zoë paid 12.50 in Kraków"
    for span in find_spans(line):
        assert line[span.start : span.end] == span.text == span.target
    assert [(s.start, s.end) for s in find_spans(line)] == [(0, 3), (9, 14), (18, 24)]


def test_with_the_tokenizer_common_words_are_not_names_and_unseen_characters_are_rare(small_tokenizers):
    src, _ = small_tokenizers  # vocabulary 40 trained on English lines: "a", "the" ... are single pieces
    vocabulary = SourceWords(src)
    assert vocabulary.known("The") and not vocabulary.known("Łukasz")
    assert vocabulary.rare("東") and vocabulary.rare("🐕") and not vocabulary.rare("a")
    assert spans_of("Two dogs 🐕 run in 東京.", vocabulary) == [("🐕", "rare"), ("東京", "rare")]
    # a capitalized common word inside a sentence is no name; "(東京)" loses its brackets
    assert spans_of("A man rides The bike (東京)", vocabulary) == [("東京", "rare")]


def test_a_source_language_that_capitalizes_nouns_has_no_name_spans(small_tokenizers):
    """German capitalizes every noun: a capital there says nothing of a name, so a de->X model must not copy its
    nouns verbatim; numbers and unseen characters are still kept."""
    src, _ = small_tokenizers
    line = "Ein Radfahrer fahrt 12 Kilometer nach Berlin 🐕"
    assert ("Kilometer", "name") in spans_of(line, SourceWords(src))  # as an English model would read it
    german = spans_of(line, SourceWords(src, capitalized_nouns=True))
    assert not [span for span in german if span[1] == "name"] and {("12", "number"), ("🐕", "rare")} <= set(german)


def test_numbers_must_stand_alone_to_count_as_kept():
    five = Span(0, 1, "5", "number", "5")
    assert verbatim(five, "Es sind 5 Hunde.") and not verbatim(five, "Es sind 15 Hunde.")
    assert verbatim(Span(0, 3, "Zoë", "name", "Zoë"), "Zoës Hund")


# ---------------------------------------------------------------------------- glossary
def test_glossary_file_pairs_kept_terms_comments_and_blank_lines(tmp_path):
    path = tmp_path / "terms.tsv"
    path.write_text("# my terms\nbike\tFahrrad\n\nAcme Corp\n New York \t New York City \n", encoding="utf-8")
    assert Glossary.load(path).entries == (("bike", "Fahrrad"), ("Acme Corp", None), ("New York", "New York City"))


@pytest.mark.parametrize("content, line, words", [
    ("bike\tFahrrad\na\tb\tc\n", 2, "3 tab-separated fields"),
    ("# x\n\nbike\t \n", 3, "empty target term"),
    ("\tRad\n", 1, "empty source term"),
])
def test_glossary_file_errors_name_file_and_line(tmp_path, content, line, words):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(GlossaryError) as err:
        Glossary.load(path)
    assert f"{path}:{line}:" in str(err.value) and words in str(err.value)


def test_glossary_matches_whole_words_case_insensitive_longest_first():
    glossary = Glossary.of({"york": "Y", "new": "neu", "New York": "NYC", "bike": "Fahrrad"}, keep=["acme"])
    line = "In new  york, ACME bikes and a Bike in Yorkshire."
    assert [(s.text, s.target) for s in glossary.spans(line)] == [("new  york", "NYC"), ("ACME", "ACME"),
                                                                 ("Bike", "Fahrrad")]
    assert Glossary.of([("bike", "Rad"), ["BIKE", "Fahrrad"], ["Acme"]]).entries == (("BIKE", "Fahrrad"),
                                                                                    ("Acme", None))
    with pytest.raises(GlossaryError, match="entry 0"):
        Glossary.of([("a", "b", "c")])


def test_glossary_terms_win_over_detected_spans():
    glossary = Glossary.of({"Kraków": "Krakau"})
    spans = input_spans("Zoë lives in Kraków.", None, glossary, protect=True)
    assert [(s.text, s.kind, s.target) for s in spans] == [("Zoë", "name", "Zoë"), ("Kraków", "glossary", "Krakau")]
    assert input_spans("Zoë lives in Kraków.", None, glossary, protect=False)[0].kind == "glossary"


# ---------------------------------------------------------------------------- restoration
def test_restore_replaces_the_aligned_word_or_inserts_next_to_the_neighbour(small_tokenizers):
    src, tgt = small_tokenizers
    line = "Zoë runs"
    source_pieces = len(src.encode([line])[0])
    zoe_pieces = len(src.encode(["Zoë"])[0])
    tokens = tgt.encode(["Hund läuft"])[0]
    dog = len(tgt.encode(["Hund"])[0])
    # target pieces of "Hund" attend to Zoë's first piece, those of "läuft" to the last source piece ("runs")
    attention = torch.zeros(len(tokens) + 1, source_pieces + 1)
    attention[:dog, 0] = 1.0
    attention[dog:, source_pieces - 1] = 1.0
    name = Span(0, 3, "Zoë", "name", "Zoë")
    assert restore("Hund läuft", tokens, attention, line, [name], src, tgt) == "Zoë läuft"
    # the same span as a rare one goes right before the word attending to it, never over it
    rare = Span(0, 3, "Zoë", "rare", "Zoë")
    assert restore("Hund läuft", tokens, attention, line, [rare], src, tgt) == "Zoë Hund läuft"
    # nothing attends to the span: it goes after the words aligned to its source neighbour before it
    line2 = "dogs 12 run."
    pieces2 = len(src.encode([line2])[0])
    attention2 = torch.zeros(len(tokens) + 1, pieces2 + 1)
    attention2[:dog, 0] = 1.0
    attention2[dog:, pieces2 - 1] = 1.0
    number = Span(5, 7, "12", "number", "12")
    assert restore("Hund läuft.", tokens + tgt.encode(["."])[0][-1:], torch.cat([attention2[:-1], attention2[-2:]]),
                   line2, [number], src, tgt) == "Hund 12 läuft."
    # a forced prefix is never written over
    assert restore("Hund läuft", tokens, attention, line, [name], src, tgt, fixed_pieces=dog) == "Hund Zoë läuft"
    assert zoe_pieces >= 1


def test_check_and_spans_past_the_pieces_read(small_tokenizers):
    src, _ = small_tokenizers
    line = "a dog and Zoë"
    spans = find_spans(line)
    read, unread = read_spans(line, spans, src, pieces_read=2)
    assert read == [] and [s.text for s in unread] == ["Zoë"]
    assert read_spans(line, spans, src, pieces_read=100) == (spans, [])
    kept, missing = check("ein Hund und Zoë", spans)
    assert [s.text for s in kept] == ["Zoë"] and missing == []
