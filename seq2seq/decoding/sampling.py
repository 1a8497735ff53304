"""Sampling: draw outputs from the model's distribution (back-translation, diverse outputs).

Sampling is greedy search with another rule for the next token (:class:`Sampler`): the step's log-probabilities
(after the same constraints as every search mode) are divided by the temperature, cut to the ``top_k`` best tokens
and to the smallest set whose probability reaches ``top_p`` (nucleus sampling, Holtzman et al. 2020), renormalized,
and sampled from with a seeded ``torch.Generator``. Each sentence is repeated ``nbest`` times, so its samples are
drawn side by side in one batch. :meth:`Sampling.for_inputs` gives every input its own random stream, seeded from
the seed and the input's source ids (:func:`input_seed`), so an input's samples are the same alone, in any batch
or streamed line by line (and two identical inputs get identical samples). Reported scores are the model's own log-probabilities (untempered,
untruncated) divided by the length penalty, the numbers beam search and scoring give the same output.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from seq2seq.decoding.ensemble import Ensemble
from seq2seq.decoding.hypothesis import Hypothesis
from seq2seq.decoding.options import DecodeOptions
from seq2seq.decoding.search import greedy_search


@dataclass
class Sampler:
    """Picks the next token of each row at random.

    Attributes:
        temperature: > 0; below 1 sharpens the distribution, above 1 flattens it.
        top_k: keep only the k most probable tokens (0 = all).
        top_p: keep the smallest set of most probable tokens whose probability reaches p (1 = all).
        generator: the random stream (seeded by the caller for reproducible samples).
        generators: instead, one random stream per sentence: the N rows are split into ``len(generators)`` equal
            groups (sentence b's copies are rows b*copies .. b*copies + copies - 1), each drawn with its own.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    generator: torch.Generator | None = None
    generators: list[torch.Generator] | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = no limit), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def distribution(self, log_probs: Tensor) -> Tensor:
        """(N, V) log-probabilities -> (N, V) the probabilities tokens are drawn with (rows sum to 1)."""
        scores = log_probs.float() / self.temperature
        if 0 < self.top_k < scores.size(1):
            kth_best = scores.topk(self.top_k, dim=1).values[:, -1:]
            scores = scores.masked_fill(scores < kth_best, float("-inf"))
        if self.top_p < 1:
            sorted_scores, order = scores.sort(dim=1, descending=True)
            sorted_probs = torch.softmax(sorted_scores, dim=1)
            mass_before = sorted_probs.cumsum(dim=1) - sorted_probs  # probability of the better tokens
            drop_sorted = mass_before >= self.top_p  # the set already reached p without this token
            drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
        return torch.softmax(scores, dim=1)

    def __call__(self, log_probs: Tensor) -> Tensor:
        """(N, V) -> (N,) sampled token ids."""
        probs = self.distribution(log_probs)
        if self.generators is None:
            return torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
        groups = probs.split(probs.size(0) // len(self.generators))
        return torch.cat([torch.multinomial(group, 1, generator=generator).squeeze(1)
                          for group, generator in zip(groups, self.generators)])


def input_seed(seed: int, src_ids: Sequence[int]) -> int:
    """The seed of one input's random stream: a hash of ``seed`` and the input's source ids (not of its place in a
    batch, nor of Python's per-process ``hash``)."""
    digest = hashlib.sha256(f"{seed}:{','.join(str(int(i)) for i in src_ids)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A random stream on ``device`` seeded with ``seed`` (same seed, same samples)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


@torch.inference_mode()
def sample_search(
    model: Ensemble,
    src: Tensor,
    src_lengths: Tensor,
    options: DecodeOptions,
    sampler: Sampler,
    *,
    prefix: Tensor | None = None,
) -> list[list[Hypothesis]]:
    """Draw ``options.nbest`` outputs per sentence.

    Args:
        model: the Ensemble to decode with; src: (B, S) source ids; src_lengths: (B,).
        options: ``nbest`` samples per sentence; the length limits, ``min_length``, ``no_repeat_ngram``,
            ``length_penalty`` (for the reported score) and ``return_attention``.
        prefix: (B, P) forced target ids (PAD past each row's prefix), or None.
    Returns:
        per sentence (input order) its samples, in the order drawn (not sorted: they are draws, not a ranking).
    """
    num_samples = options.nbest  # checked where the settings enter (check_nbest with sampling)
    hypotheses = greedy_search(model, src, src_lengths, options, prefix=prefix, pick=sampler, copies=num_samples)
    return [hypotheses[i : i + num_samples] for i in range(0, len(hypotheses), num_samples)]


@dataclass
class Sampling:
    """How to sample (the user-facing settings of :class:`Sampler`); ``seed`` makes the draws reproducible."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def sampler(self, device: torch.device | str = "cpu") -> Sampler:
        """A :class:`Sampler` with a fresh generator seeded with ``seed`` on ``device`` (one stream for all rows)."""
        return Sampler(self.temperature, self.top_k, self.top_p, make_generator(self.seed, device))

    def for_inputs(self, src_ids: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> Sampler:
        """A :class:`Sampler` for a batch of these inputs (source ids, in batch order): one stream per input, seeded
        with :func:`input_seed`, so each input draws the same samples wherever it is decoded."""
        generators = [make_generator(input_seed(self.seed, ids), device) for ids in src_ids]
        return Sampler(self.temperature, self.top_k, self.top_p, generators=generators)
