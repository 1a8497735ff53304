"""SentencePiece tokenizers: training options, fixed special ids, round trips, robustness, files."""

from __future__ import annotations

import gzip
import io
import pickle
import random
import unicodedata
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seq2seq.config import ConfigError, TokenizerConfig
from seq2seq.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SRC_TOKENIZER_FILE,
    TGT_TOKENIZER_FILE,
    BYTE_PIECES,
    UNK_ID,
    Tokenizer,
    TokenizerError,
    load_tokenizers,
    train_tokenizers,
)

WORDS = "the a small big dog cat runs sleeps in on under house garden tree river quickly happily red blue".split()


def synthetic_lines(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def read_lines(directory: Path, split: str, lang: str) -> list[str]:
    with gzip.open(directory / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
        return [line.strip() for line in f]


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory) -> Tokenizer:
    """A unigram model trained in well under a second on synthetic sentences."""
    lines = synthetic_lines(500, seed=0)
    src, _ = train_tokenizers(TokenizerConfig(vocab_size=40), lines, lines, tmp_path_factory.mktemp("small"))
    return src


def roundtrip_rate(tok: Tokenizer, lines: list[str]) -> float:
    decoded = tok.decode(tok.encode(lines))
    return sum(a == b for a, b in zip(lines, decoded)) / len(lines)


def test_multi30k_bpe_separate_vocabularies_round_trip(multi30k_dir, tmp_path):
    cfg = TokenizerConfig(type="bpe", vocab_size=8000)
    src_tok, tgt_tok = train_tokenizers(
        cfg, read_lines(multi30k_dir, "train", "en"), read_lines(multi30k_dir, "train", "de"), tmp_path
    )
    assert src_tok is not tgt_tok and src_tok.vocab_size == tgt_tok.vocab_size == 8000 + BYTE_PIECES
    assert (tmp_path / SRC_TOKENIZER_FILE).read_bytes() != (tmp_path / TGT_TOKENIZER_FILE).read_bytes()
    for tok, lang in [(src_tok, "en"), (tgt_tok, "de")]:
        assert roundtrip_rate(tok, read_lines(multi30k_dir, "val", lang)) >= 0.999
    loaded_src, loaded_tgt = load_tokenizers(tmp_path)
    assert loaded_src.model_bytes == src_tok.model_bytes and loaded_tgt.model_bytes == tgt_tok.model_bytes


def test_multi30k_unigram_joint_vocabulary_round_trip(multi30k_dir, tmp_path):
    cfg = TokenizerConfig(type="unigram", vocab_size=8000, joint=True)
    src_tok, tgt_tok = train_tokenizers(
        cfg, read_lines(multi30k_dir, "train", "en"), read_lines(multi30k_dir, "train", "de"), tmp_path
    )
    assert src_tok is tgt_tok and src_tok.vocab_size == 8000 + BYTE_PIECES
    assert (tmp_path / SRC_TOKENIZER_FILE).read_bytes() == (tmp_path / TGT_TOKENIZER_FILE).read_bytes()
    for lang in ("en", "de"):
        assert roundtrip_rate(src_tok, read_lines(multi30k_dir, "val", lang)) >= 0.999
    loaded_src, loaded_tgt = load_tokenizers(tmp_path)
    assert loaded_src is loaded_tgt


def test_vocab_too_large_for_the_corpus_names_the_key(multi30k_dir, tmp_path):
    # real text cannot support arbitrarily many unigram pieces; SentencePiece reports the maximum
    lines = read_lines(multi30k_dir, "train", "en")[:5000]
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size = 8000 .*source.* (at most|only) \d+"):
        train_tokenizers(TokenizerConfig(vocab_size=8000), lines, lines, tmp_path)


def test_vocab_slightly_too_large_trains_with_a_warning(multi30k_dir, tmp_path, caplog):
    # Multi30k English supports a little under 8,000 unigram pieces: the soft limit uses what the text allows
    lines = read_lines(multi30k_dir, "train", "en")
    with caplog.at_level("WARNING"):
        src_tok, _ = train_tokenizers(TokenizerConfig(vocab_size=8000, joint=True), lines, [], tmp_path)
    assert 0.9 * 8000 <= src_tok.vocab_size - BYTE_PIECES < 8000  # byte fallback's 256 pieces come on top
    assert "fewer than tokenizer.vocab_size = 8000" in caplog.text


def test_vocab_too_large_small_corpus(tmp_path):
    lines = synthetic_lines(50, seed=1)
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size = 5000 .*set tokenizer\.vocab_size <= \d+"):
        train_tokenizers(TokenizerConfig(vocab_size=5000), lines, lines, tmp_path)
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size = 5000 .*joint"):
        train_tokenizers(TokenizerConfig(vocab_size=5000, joint=True), lines, lines, tmp_path)


def test_empty_training_input_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="source tokenizer.*no non-empty lines"):
        train_tokenizers(TokenizerConfig(vocab_size=60), ["", "  "], synthetic_lines(100, 0), tmp_path)


def test_special_ids_are_fixed(small_tokenizer):
    tok = small_tokenizer
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    ids = tok.encode(["the dog runs", "a red tree"])
    assert all(ids) and not {PAD_ID, BOS_ID, EOS_ID} & {i for seq in ids for i in seq}
    assert UNK_ID not in tok.encode(["the dog ☃"])[0]  # byte fallback: spelled as its three UTF-8 bytes


UNSEEN = ["Zoë and Łukasz walk past the café in Kraków.", "A man in a 東京 shirt.", "Two dogs 🐕 run.",
          "mail x@y.org, 3.14159 km, ß ∑ ₩ \u00a0 \t tab"]


def test_byte_fallback_loses_no_character_and_older_tokenizers_still_map_to_unk(tmp_path):
    # trained on ASCII words only: every character below is unseen by the pieces
    lines = synthetic_lines(500, seed=0)
    tok, _ = train_tokenizers(TokenizerConfig(vocab_size=40), lines, lines, tmp_path / "new")
    assert tok.byte_fallback and tok.vocab_size == 40 + BYTE_PIECES
    for text in UNSEEN:
        ids = tok.encode([text])[0]
        assert UNK_ID not in ids
        # the decoded text is the input up to SentencePiece's NFKC normalization and collapsed spaces
        assert tok.decode([ids])[0] == " ".join(unicodedata.normalize("NFKC", text).split())
    assert tok.pieces(["🐕"])[0][-4:] == ["<0xF0>", "<0x9F>", "<0x90>", "<0x95>"]
    old, _ = train_tokenizers(TokenizerConfig(vocab_size=40, byte_fallback=False), lines, lines, tmp_path / "old")
    assert not old.byte_fallback and old.vocab_size == 40
    assert UNK_ID in old.encode(["Łukasz"])[0]


def test_decode_drops_specials_and_stops_at_eos(small_tokenizer):
    tok = small_tokenizer
    ids = tok.encode(["the dog runs", "the cat"])
    padded = [[BOS_ID, *ids[0], EOS_ID, *ids[1], PAD_ID], [*ids[1], EOS_ID, PAD_ID, PAD_ID]]
    assert tok.decode(padded) == ["the dog runs", "the cat"]
    assert tok.decode([[]]) == [""]
    assert tok.decode(torch.tensor([padded[1]])) == ["the cat"]  # a (B, T) tensor of ids works too
    assert tok.pieces(["the dog"])[0][0].startswith("▁")


NASTY = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\u200b\u200d", "\ufeff", "\r\n\t", "\U0001f600" * 50,
         "é" * 1000, "\x7f\x1b[31m", "<s></s><pad><unk>"]


@pytest.mark.parametrize("text", NASTY)
def test_odd_unicode_never_crashes(small_tokenizer, text):
    ids = small_tokenizer.encode([text])[0]
    assert all(0 <= i < small_tokenizer.vocab_size for i in ids)
    assert isinstance(small_tokenizer.decode([ids])[0], str)
    assert len(small_tokenizer.pieces([text])) == 1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=4))
def test_arbitrary_text_never_crashes(small_tokenizer, texts):
    ids = small_tokenizer.encode(texts)
    assert len(ids) == len(texts)
    assert len(small_tokenizer.decode(ids)) == len(texts)


def test_save_load_round_trip(small_tokenizer, tmp_path):
    path = tmp_path / "sub" / "tok.model"
    small_tokenizer.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["tok.model"]  # no temporary file left behind
    loaded = Tokenizer.load(path)
    assert loaded.model_bytes == small_tokenizer.model_bytes
    texts = synthetic_lines(20, seed=3)
    assert loaded.encode(texts) == small_tokenizer.encode(texts)
    assert Tokenizer.from_bytes(path.read_bytes()).vocab_size == small_tokenizer.vocab_size


def test_training_sees_only_the_sampled_sentences(tmp_path):
    # 2,000 lines, each with its own CJK character: character_coverage = 1.0 keeps every character SentencePiece
    # sees, so a sample of 150 lines can put at most 150 of them into the vocabulary (all 2,000 would not fit in 180)
    rare = [chr(0x4E00 + i) for i in range(2000)]
    lines = [f"the small dog {char} runs in the garden" for char in rare]
    cfg = TokenizerConfig(vocab_size=180, input_sentence_size=150, character_coverage=1.0)
    src, _ = train_tokenizers(cfg, lines, lines, tmp_path)
    pieces = {src.id_to_piece(i) for i in range(src.vocab_size)}
    seen = sum(any(char in piece for piece in pieces) for char in rare)
    assert 0 < seen <= 150


def test_pickled_tokenizer_encodes_and_decodes_alike(small_tokenizer):
    copy = pickle.loads(pickle.dumps(small_tokenizer))  # how tokenizing worker processes receive it
    texts = ["the small dog runs in the garden", "a red house under a big tree"]
    assert copy.model_bytes == small_tokenizer.model_bytes and copy.source == small_tokenizer.source
    assert copy.encode(texts) == small_tokenizer.encode(texts)
    assert copy.decode(copy.encode(texts)) == small_tokenizer.decode(small_tokenizer.encode(texts))


def test_missing_and_corrupt_files(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(TokenizerError, match=f"not found: {missing}"):
        Tokenizer.load(missing)
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(b"this is not a protobuf")
    with pytest.raises(TokenizerError, match=f"{corrupt}: not a SentencePiece model"):
        Tokenizer.load(corrupt)
    with pytest.raises(TokenizerError, match=f"{tmp_path / SRC_TOKENIZER_FILE}"):
        load_tokenizers(tmp_path)


def test_model_with_other_special_ids_is_rejected(tmp_path):
    model = io.BytesIO()  # SentencePiece's own defaults: unk=0, bos=1, eos=2, no pad
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(synthetic_lines(200, 0)), model_writer=model, vocab_size=40, minloglevel=2
    )
    with pytest.raises(TokenizerError, match="special ids"):
        Tokenizer.from_bytes(model.getvalue())


def test_user_symbols_stay_one_piece(tmp_path):
    """``tokenizer.user_symbols``: a tag such as <2de> is one piece wherever it occurs; without it, SentencePiece
    cuts it up."""
    rng = random.Random(0)
    lines = [("<2de> " if rng.random() < 0.5 else "") + line for line in synthetic_lines(500, seed=3)]
    plain, _ = train_tokenizers(TokenizerConfig(vocab_size=45), lines, lines, tmp_path / "plain")
    tagged, _ = train_tokenizers(TokenizerConfig(vocab_size=45, user_symbols=["<2de>", "<2fr>"]), lines, lines,
                                 tmp_path / "tagged")
    text = ["<2de> the dog", "x<2fr>y"]
    assert "<2de>" not in plain.pieces(text)[0]  # the control: cut into pieces
    de_pieces, fr_pieces = tagged.pieces(text)
    assert de_pieces[:2] == ["\u2581", "<2de>"] and "".join(de_pieces) == "\u2581<2de>\u2581the\u2581dog"
    assert fr_pieces == ["\u2581", "<0x78>", "<2fr>", "y"]  # inside a word too (x is no piece: its byte)
    # x is no piece of the model: byte fallback spells it, and it comes back
    assert tagged.decode(tagged.encode(text)) == ["<2de> the dog", "x<2fr>y"]


@pytest.mark.parametrize("symbols", ['["a b"]', '[""]', '["</s>"]', '["<x>", "<x>"]'])
def test_bad_user_symbols_name_the_key(symbols):
    from seq2seq.config import load_config

    with pytest.raises(ConfigError, match=r"tokenizer\.user_symbols\[\d\]"):
        load_config(None, [f"tokenizer.user_symbols={symbols}"])


# ---------------------------------------------------------------------------- sampled segmentations
@pytest.mark.parametrize("model_type,alpha", [("unigram", 0.1), ("bpe", 0.3)])
def test_sampled_segmentation_is_a_function_of_text_and_seed_alone(model_type, alpha, tmp_path):
    """Unigram sampling and BPE-dropout: each text's sample depends on its own seed only (not on the order or the
    chunks it is sampled in), other seeds give other segmentations, and every sample spells the text."""
    lines = synthetic_lines(400, seed=3)
    tok, _ = train_tokenizers(TokenizerConfig(type=model_type, vocab_size=40), lines, lines, tmp_path)
    texts, seeds = synthetic_lines(60, seed=4), list(range(1000, 1060))
    texts = [t for t in texts if len(t) > 15]
    seeds = seeds[: len(texts)]
    sampled = tok.sample(texts, alpha, seeds)
    backwards = tok.sample(texts[::-1], alpha, seeds[::-1])[::-1]
    one_by_one = [tok.sample([text], alpha, [seed])[0] for text, seed in zip(texts, seeds)]
    assert sampled == backwards == one_by_one
    other_seeds = tok.sample(texts, alpha, [s + 7 for s in seeds])
    best = tok.encode(texts)
    assert sum(a != b for a, b in zip(sampled, other_seeds)) > len(texts) // 2
    assert sum(a != b for a, b in zip(sampled, best)) > len(texts) // 2
    assert tok.decode(sampled) == tok.decode(best)
    # the sampled pieces are finer than the best ones on average (BPE-dropout skips merges)
    assert sum(map(len, sampled)) > sum(map(len, best))
