"""Batches (seq2seq/token_batches.py): the collate layout, the token-budget sampler (budget, cover, seeded order, the
per-pair greedy cut), reading a batch through an indices mapping, sentence batches for decoding, and the padding
of a real Multi30k epoch."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from support.corpus import DE, EN, config

from seq2seq.token_batches import (
    Batch,
    TokenBatchSampler,
    batch_view,
    collate,
    iterate_batches,
    read_batch,
)
from seq2seq.config import ConfigError, TokenizerConfig
from seq2seq.data import read_split
from seq2seq.tokenized_corpus import tokenize_split
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID, train_tokenizers

# -------------------------------------------------------------------------------------------- batches


def test_collate_layout():
    batch = collate([[5, 6, EOS_ID], [7, EOS_ID]], [[8, 9, 10], [11]])
    assert batch.src.tolist() == [[5, 6, EOS_ID], [7, EOS_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 8, 9, 10], [BOS_ID, 11, PAD_ID, PAD_ID]]
    assert batch.tgt_out.tolist() == [[8, 9, 10, EOS_ID], [11, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.src_lengths.tolist() == [3, 2] and batch.tgt_lengths.tolist() == [4, 2]
    assert batch.src.dtype == batch.tgt_in.dtype == batch.src_lengths.dtype == torch.long
    assert batch.size == 2 and batch.num_tgt_tokens == 6
    moved = batch.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.tgt_out, batch.tgt_out) and moved.num_tgt_tokens == 6


def test_collate_empty_target():
    batch = collate([[EOS_ID]], [[]])
    assert batch.tgt_in.tolist() == [[BOS_ID]] and batch.tgt_out.tolist() == [[EOS_ID]]


def random_lengths(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(2, 60, n), rng.integers(2, 60, n)


@pytest.mark.parametrize("max_tokens", [120, 1000, 4096])
def test_batches_respect_the_budget_and_cover_every_index(max_tokens):
    src_lengths, tgt_lengths = random_lengths(3000, seed=max_tokens)
    sampler = TokenBatchSampler(src_lengths, tgt_lengths, max_tokens=max_tokens, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        assert len(batch) * (src_lengths[batch].max() + tgt_lengths[batch].max()) <= max_tokens
    assert sorted(i for batch in batches for i in batch) == list(range(3000))


def test_sampler_order_is_a_function_of_seed_and_epoch():
    src_lengths, tgt_lengths = random_lengths(2000, seed=0)

    def epoch(seed: int, number: int) -> list[list[int]]:
        sampler = TokenBatchSampler(src_lengths, tgt_lengths, max_tokens=1000, seed=seed)
        sampler.set_epoch(number)
        return list(sampler)

    assert epoch(1, 0) == epoch(1, 0)
    assert epoch(1, 3) == epoch(1, 3)
    assert epoch(1, 0) != epoch(1, 1)
    assert epoch(1, 0) != epoch(2, 0)
    assert len(epoch(1, 0)) == len(epoch(1, 1))
    fixed = TokenBatchSampler(src_lengths, tgt_lengths, max_tokens=1000, seed=1, shuffle=False)
    assert list(fixed) == list(fixed)


def per_pair_batches(src_lengths, tgt_lengths, max_tokens: int, seed: int, epoch: int, shuffle: bool):
    """The sampler's documented algorithm, one pair at a time (the implementation before it was vectorized)."""
    rng = np.random.default_rng((seed, epoch))
    n = len(src_lengths)
    tiebreak = rng.permutation(n) if shuffle else np.arange(n)
    order = np.lexsort((tiebreak, tgt_lengths, src_lengths))
    batches, start, max_src, max_tgt = [], 0, 0, 0
    for pos, index in enumerate(order):
        new_src, new_tgt = max(max_src, src_lengths[index]), max(max_tgt, tgt_lengths[index])
        if (pos - start + 1) * (new_src + new_tgt) > max_tokens:
            batches.append(order[start:pos].tolist())
            start, new_src, new_tgt = pos, src_lengths[index], tgt_lengths[index]
        max_src, max_tgt = new_src, new_tgt
    batches.append(order[start:].tolist())
    return [batches[i] for i in rng.permutation(len(batches))] if shuffle else batches


@pytest.mark.parametrize("seed", range(4))
def test_sampler_batches_equal_the_per_pair_greedy_cut(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5000))
    high = int(rng.choice([4, 30, 200]))  # many ties, typical lengths, long pairs (windows must grow)
    src_lengths, tgt_lengths = rng.integers(1, high, n), rng.integers(1, high, n)
    max_tokens = int(rng.integers(2 * high, 60 * high))
    for shuffle in (True, False):
        sampler = TokenBatchSampler(src_lengths, tgt_lengths, max_tokens, seed=seed, shuffle=shuffle)
        for epoch in (0, 5):
            sampler.set_epoch(epoch)
            expected = per_pair_batches(src_lengths, tgt_lengths, max_tokens, seed, epoch, shuffle)
            assert list(sampler) == expected and len(sampler) == len(expected)


def test_read_batch_equals_collate_of_the_rows(small_tokenizers, tmp_path):
    src_tok, tgt_tok = small_tokenizers
    raw = datasets.Dataset.from_dict({"src": EN * 5, "tgt": DE * 5})
    limit = int(np.median([len(ids) for ids in src_tok.encode(EN)]))
    kept = tokenize_split(raw, src_tok, tgt_tok, str(tmp_path), max_length=limit)  # an indices mapping
    assert 0 < len(kept) < len(raw)
    indices = [len(kept) - 1, 0, 2, 2]
    rows = [kept[i] for i in indices]
    expected = collate([r["src_ids"] for r in rows], [r["tgt_ids"] for r in rows])
    batch = read_batch(batch_view(kept), indices)
    for name in ("src", "src_lengths", "tgt_in", "tgt_out", "tgt_lengths"):
        assert torch.equal(getattr(batch, name), getattr(expected, name)), name
    assert batch_view(kept) is batch_view(kept)
    sampler = TokenBatchSampler.from_dataset(kept, max_tokens=1000, seed=0)  # lengths through the mapping
    assert sampler.src_lengths.tolist() == [r["src_len"] for r in kept]
    assert sampler.tgt_lengths.tolist() == [r["tgt_len"] for r in kept]


def test_pair_larger_than_budget_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.max_tokens = 50 .*= 61 positions.*data\.max_length"):
        TokenBatchSampler(np.array([5, 30]), np.array([5, 31]), max_tokens=50, seed=0)


def test_sentence_batches_cover_every_index_once():
    from seq2seq.decoding.driver import sentence_batches

    lengths = [3, 9, 1, 9, 4, 7, 2]
    batches = sentence_batches(lengths, batch_size=3)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths))) and all(len(b) <= 3 for b in batches)
    # by hand: lengths 9 (index 1), 9 (3), 7 (5), 4 (4), 3 (0), 2 (6), 1 (2); ties keep input order
    assert batches == [[1, 3, 5], [4, 0, 6], [2]]
    assert sentence_batches([], 4) == []


# ------------------------------------------------------------------------------------- Multi30k epoch


def test_multi30k_epoch_padding_under_ten_percent(multi30k_dir, tmp_path):
    cfg = config(multi30k_dir, tmp_path)
    raw = read_split(cfg, "train")
    tok_cfg = TokenizerConfig(type="bpe", vocab_size=8000)  # bpe trains fastest; lengths are much the same
    src_tok, tgt_tok = train_tokenizers(tok_cfg, raw["src"], raw["tgt"], tmp_path / "model")
    train = tokenize_split(raw, src_tok, tgt_tok, str(tmp_path / "tok"), max_length=cfg.max_length)
    sampler = TokenBatchSampler.from_dataset(train, max_tokens=4096, seed=1234)
    padded = real = sentences = 0
    for batch in iterate_batches(train, sampler):
        cost = batch.size * (batch.src.size(1) + batch.tgt_in.size(1))
        assert cost <= 4096
        padded += cost
        real += int(batch.src_lengths.sum() + batch.tgt_lengths.sum())
        sentences += batch.size
    assert sentences == len(train) > 28_900
    padding = 1 - real / padded
    print(f"Multi30k train, max_tokens 4096: {len(sampler)} batches, padding {padding:.2%} of positions")
    assert padding < 0.10
