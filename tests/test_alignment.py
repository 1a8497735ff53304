"""Hard alignments (seq2seq/decoding/alignment.py, ``translate --json --alignments``) against hand-computed mappings."""

from __future__ import annotations

import json

import pytest
import torch
from support.cli import SENTENCES, output_lines, run

from seq2seq.decoding.alignment import hard_alignment, piece_words
from seq2seq.translator import Translation, Translator
from seq2seq.config import TokenizerConfig
from seq2seq.tokenizer import train_tokenizers

LINES = ["the dog runs", "a red dog", "the cat sleeps."] * 20


@pytest.fixture(scope="module")
def char_tokenizer(tmp_path_factory):
    """A BPE tokenizer with no merges (vocabulary = specials + characters + ▁): every piece is one character,
    so the pieces of any text are known by hand."""
    characters = set("".join(LINES).replace(" ", ""))
    cfg = TokenizerConfig(type="bpe", vocab_size=4 + len(characters) + 1)
    tok, _ = train_tokenizers(cfg, LINES, LINES, tmp_path_factory.mktemp("char_tok"))
    return tok


def test_piece_words_by_hand(char_tokenizer):
    line = "the  red\tcat."  # words: the, red, cat.
    assert char_tokenizer.pieces([line])[0] == list("\u2581the\u2581red\u2581cat.")
    assert piece_words(line, char_tokenizer) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2]
    # a zero-width space is no whitespace for str.split(), but SentencePiece starts a new piece there
    zwsp = "a\u200bt cat"
    assert char_tokenizer.pieces([zwsp])[0] == list("\u2581a\u2581t\u2581cat")
    assert piece_words(zwsp, char_tokenizer) == [0, 0, 0, 0, 1, 1, 1, 1]


def test_hard_alignment_by_hand(char_tokenizer):
    line = "the  red\tcat."
    src_pieces = list("\u2581the\u2581red\u2581cat.") + ["</s>"]  # 13 pieces + EOS
    attention = torch.full((4, 14), 0.01)
    attention[0, 5] = 0.9  # target piece 0 -> source piece 5 ('r', word 1)
    attention[1, 13] = 0.5  # source EOS is never an answer ...
    attention[1, 2] = attention[1, 7] = 0.2  # ... and of two equal maxima the first wins: piece 2 ('h', word 0)
    attention[2, 12] = 0.6  # '.', word 2
    attention[3, 0] = 0.9  # the target EOS row is left out
    translation = Translation(text="x y", tokens=[7, 8, 9], score=-1.0, attention=attention,
                              src_pieces=src_pieces, tgt_pieces=["\u2581x", "y", "\u2581z", "</s>"])
    assert hard_alignment(translation, line, char_tokenizer) == {
        "src_pieces": src_pieces[:-1], "tgt_pieces": ["\u2581x", "y", "\u2581z"],
        "src_piece_index": [5, 2, 12], "src_word_index": [1, 0, 2],
    }


def test_empty_input_has_an_empty_alignment(char_tokenizer):
    empty = Translation(text="", tokens=[], score=0.0)
    assert hard_alignment(empty, "", char_tokenizer) == {
        "src_pieces": [], "tgt_pieces": [], "src_piece_index": [], "src_word_index": []}


def test_translate_json_alignments(tiny_model_dir):
    tr = Translator.load(tiny_model_dir, device="cpu")
    inputs = [*SENTENCES, ""]
    records = [json.loads(line) for line in output_lines(run(
        "seq2seq.translate", "--model", str(tiny_model_dir), "--json", "--alignments", "--nbest", "2",
        "--beam-size", "3", *inputs))]
    expected = tr.generate(inputs, beam_size=3, nbest=2, return_attention=True)
    for line, record, hypotheses in zip(inputs, records, expected):
        assert [h["text"] for h in record["translations"]] == [t.text for t in hypotheses[: len(record["translations"])]]
        for h, t in zip(record["translations"], hypotheses):
            alignment = h["alignment"]
            pieces = tr.src_tokenizer.pieces([line])[0]
            assert alignment["src_pieces"] == pieces
            assert alignment["tgt_pieces"] == [tr.tgt_tokenizer.id_to_piece(i) for i in t.tokens]
            n_tgt = len(t.tokens)
            assert len(alignment["src_piece_index"]) == len(alignment["src_word_index"]) == n_tgt
            if n_tgt and pieces:
                assert alignment["src_piece_index"] == t.attention[:n_tgt, : len(pieces)].argmax(dim=1).tolist()
            # for ordinary text, the word of a piece is the number of "▁"-led pieces up to it, minus one
            words = [sum(p.startswith("\u2581") for p in pieces[: i + 1]) - 1 for i in range(len(pieces))]
            assert alignment["src_word_index"] == [words[i] for i in alignment["src_piece_index"]]
            assert all(0 <= w < len(line.split()) for w in alignment["src_word_index"])


def test_alignments_need_json(tiny_model_dir):
    result = run("seq2seq.translate", "--model", str(tiny_model_dir), "--alignments", "a dog")
    assert result.returncode == 2 and "--json" in result.stderr and "Traceback" not in result.stderr
