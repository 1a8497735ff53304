"""Subword regularization (seq2seq/segmentation.py): each epoch's sampled segmentation of the training pairs, the
batches cut from it, and training with it (two runs with one seed alike, ``--resume`` exact)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from conftest import REPO_ROOT, TINY_OVERRIDES, train_until_interrupted

from seq2seq.config import DataConfig, TokenizerConfig, load_config
from seq2seq.data import read_split
from seq2seq.tokenized_corpus import tokenize_split
from seq2seq.segmentation import SampledBatchSampler, SampledSegmentation, pair_seeds
from seq2seq.tokenizer import EOS_ID, train_tokenizers

MAX_LENGTH = 20


@pytest.fixture(scope="module")
def corpus(tiny_corpus, tmp_path_factory):
    """The tiny corpus's training split (raw and tokenized, at most MAX_LENGTH pieces a side) and its tokenizers."""
    cache = tmp_path_factory.mktemp("segmentation_cache")
    raw = read_split(DataConfig(path=str(tiny_corpus), cache_dir=str(cache)), "train")
    src_tok, tgt_tok = train_tokenizers(TokenizerConfig(vocab_size=400), raw["src"], raw["tgt"], cache / "tok")
    train = tokenize_split(raw, src_tok, tgt_tok, str(cache), MAX_LENGTH)
    assert 0 < len(train) < len(raw)  # some pairs were dropped: rows and corpus lines differ
    return raw, train, src_tok, tgt_tok


def sampler(corpus, max_tokens: int = 400, seed: int = 7, alpha: float = 0.1,
            max_length: int | None = MAX_LENGTH) -> SampledBatchSampler:
    raw, train, src_tok, tgt_tok = corpus
    segmentation = SampledSegmentation(raw, train, src_tok, tgt_tok, alpha, max_length, max_tokens, seed)
    return SampledBatchSampler(segmentation, max_tokens, seed)


def epoch(s: SampledBatchSampler, number: int) -> list[tuple[list[int], list[list[int]], list[list[int]]]]:
    """(indices, source rows, target-output rows) of every batch of epoch ``number``, padding removed."""
    s.set_epoch(number)
    out = []
    for indices in s:
        batch = s.read(indices)
        src = [row[:n].tolist() for row, n in zip(batch.src, batch.src_lengths)]
        tgt = [row[:n].tolist() for row, n in zip(batch.tgt_out, batch.tgt_lengths)]
        out.append((indices, src, tgt))
    return out


def test_an_epoch_is_sampled_within_the_limits_and_spells_the_corpus(corpus):
    """Every pair once per epoch, in batches of at most max_tokens padded positions (counted from the tensors),
    no side over data.max_length pieces, each row the text it came from, and most rows not the best segmentation."""
    raw, train, src_tok, tgt_tok = corpus
    max_tokens = 400
    s = sampler(corpus, max_tokens)
    rows = train._indices.column(0).to_numpy()  # the corpus line of each training pair
    seen, differs, total_tgt = [], 0, 0
    for indices, src, tgt in epoch(s, 3):
        batch = s.read(indices)
        assert batch.size * (batch.src.size(1) + batch.tgt_in.size(1)) <= max_tokens
        total_tgt += batch.num_tgt_tokens
        for index, src_ids, tgt_ids in zip(indices, src, tgt):
            assert src_ids[-1] == EOS_ID and tgt_ids[-1] == EOS_ID
            assert len(src_ids) - 1 <= MAX_LENGTH and len(tgt_ids) - 1 <= MAX_LENGTH
            text_src, text_tgt = raw[int(rows[index])]["src"], raw[int(rows[index])]["tgt"]
            best_src, best_tgt = src_tok.encode([text_src])[0], tgt_tok.encode([text_tgt])[0]
            assert src_tok.decode([src_ids]) == src_tok.decode([best_src])
            assert tgt_tok.decode([tgt_ids]) == tgt_tok.decode([best_tgt])
            differs += src_ids[:-1] != best_src or tgt_ids[:-1] != best_tgt
        seen.extend(indices)
    assert sorted(seen) == list(range(len(train)))
    assert differs > len(train) // 5  # (a 400-piece vocabulary leaves short sentences few segmentations)
    assert s.count_tokens(list(s))[0] == total_tgt  # the loss is normalized by the tokens the batches hold
    assert len(s) == len(list(s))


def test_a_pair_that_would_not_fit_keeps_its_best_segmentation(corpus):
    """With train.max_tokens just the longest best pair (and no data.max_length to cap the sampled sides), no
    batch may hold more positions than that pair."""
    _, train, _, _ = corpus
    longest = int((np.asarray(train["src_len"]) + np.asarray(train["tgt_len"])).max())
    s = sampler(corpus, max_tokens=longest, max_length=None)
    for indices, src, tgt in epoch(s, 1):
        batch = s.read(indices)
        assert batch.size * (batch.src.size(1) + batch.tgt_in.size(1)) <= longest


def segmented(s: SampledBatchSampler, number: int) -> dict[int, tuple[list[int], list[int]]]:
    """pair -> (source row, target row) in epoch ``number`` (whatever batch it is in)."""
    return {i: (src, tgt) for indices, srcs, tgts in epoch(s, number) for i, src, tgt in zip(indices, srcs, tgts)}


def share_differing(a: dict, b: dict) -> float:
    return sum(a[i] != b[i] for i in a) / len(a)


def test_each_epoch_is_sampled_anew_and_a_pure_function_of_seed_and_epoch(corpus):
    first = sampler(corpus)
    one, two = epoch(first, 1), epoch(first, 2)
    assert epoch(first, 1) == one  # an epoch sampled again (as --resume does) is the same, batches and all
    assert epoch(sampler(corpus), 1) == one  # and so in a new process with the same seed
    pairs_one = segmented(first, 1)
    assert share_differing(pairs_one, segmented(first, 2)) > 0.2  # pairs segmented anew, not only reshuffled
    assert share_differing(pairs_one, segmented(sampler(corpus, seed=8), 1)) > 0.2


def test_pair_seeds_depend_on_seed_epoch_and_side_but_not_on_the_corpus_size():
    base = pair_seeds(5, 2, 100, 0)
    assert np.array_equal(pair_seeds(5, 2, 40, 0), base[:40])
    for other in (pair_seeds(6, 2, 100, 0), pair_seeds(5, 3, 100, 0), pair_seeds(5, 2, 100, 1)):
        assert (other != base).mean() > 0.9
    assert base.dtype == np.uint32 and base.max() < 2**32 - 1


def test_a_pair_is_sampled_with_its_corpus_row_seed_whatever_the_length_filter_dropped(corpus, tmp_path):
    """The seed of a pair is its corpus row's, not its position after the length filter: corpus row r is segmented
    the same in the filtered training set as in an unfiltered one (no limit replaces a sample by the best here)."""
    raw, train, src_tok, tgt_tok = corpus
    everything = tokenize_split(raw, src_tok, tgt_tok, str(tmp_path), 10_000)
    assert len(everything) == len(raw) > len(train)

    def by_row(dataset) -> dict[int, tuple[list[int], list[int]]]:
        segmentation = SampledSegmentation(raw, dataset, src_tok, tgt_tok, 0.1, None, 10**9, seed=7)
        sampled = segmentation.sample(3)
        return {int(row): (sampled.src_flat[sampled.src_offsets[j]:sampled.src_offsets[j + 1]].tolist(),
                           sampled.tgt_flat[sampled.tgt_offsets[j]:sampled.tgt_offsets[j + 1]].tolist())
                for j, row in enumerate(segmentation.rows)}

    filtered, unfiltered = by_row(train), by_row(everything)
    assert filtered.keys() < unfiltered.keys()
    assert all(filtered[row] == unfiltered[row] for row in filtered)


# ---------------------------------------------------------------------------- training with sampled segmentations
def test_sampled_training_is_reproducible_and_resumes_exactly(tiny_corpus, tmp_path, monkeypatch):
    """With tokenizer.sample_alpha, a run interrupted at step 5 repeats the uninterrupted run's first 5 steps (one
    seed, the same sampled batches) and --resume ends bit for bit where it does. data.max_length = 12 leaves a few
    batches per epoch, so both runs cross several epochs, each sampled anew."""
    cfg = load_config(REPO_ROOT / "configs" / "multi30k_en_de.yaml", [
        f"data.path={tiny_corpus}", f"data.cache_dir={tmp_path / 'cache'}", "data.test_splits=[]", *TINY_OVERRIDES,
        "tokenizer.sample_alpha=0.1", "data.max_length=12", "model.dropout=0.1", "train.max_steps=8",
        "train.valid_every=4", "train.log_every=1", "train.valid_bleu_sentences=5",
    ])
    full_dir, out = tmp_path / "full", tmp_path / "resumed"
    from seq2seq.train import train

    train(cfg, full_dir)
    train_until_interrupted(cfg, out, 5, monkeypatch)
    interrupted = json.loads((out / "last" / "state.json").read_text(encoding="utf-8"))
    assert interrupted["step"] == 5 and interrupted["batch_in_epoch"] > 0  # the interrupt landed mid-epoch
    assert train(cfg, out, resume=True)["step"] == 8

    def losses(run_dir: Path) -> dict[int, float]:
        records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in records if r["type"] == "train"}

    full, resumed = losses(full_dir), losses(out)
    assert sorted(resumed) == list(range(1, 9)) and resumed == full
    for name in ("model.safetensors", "optimizer.safetensors"):
        a, b = (safetensors.torch.load_file(str(d / "last" / name)) for d in (full_dir, out))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    log = (full_dir / "train.log").read_text(encoding="utf-8")
    assert log.count("segmentations sampled") >= 3  # several epochs, each sampled when it started
    state = json.loads((out / "last" / "state.json").read_text(encoding="utf-8"))
    assert state["epoch"] >= 2
