"""Plain beam search's candidate selection in numpy: :class:`~seq2seq.decoding.topk.TopKSelection` for the runtime
without torch, step for step the same bookkeeping (best ``2K`` of ``K x V``, candidates ending in EOS among the best
``K`` join a finished buffer of ``K`` per sentence, the ``K`` best others continue, a sentence is done once no live
beam can beat its n-th best finished hypothesis)."""

from __future__ import annotations

import numpy as np

from seq2seq.decoding.hypothesis import Hypothesis, strip_ids
from seq2seq.decoding.numpy_rules import NEG_INF, top_k
from seq2seq.decoding.options import DecodeOptions, length_penalty
from seq2seq.tokenizer import EOS_ID, PAD_ID


class NumpyBeams:
    """The beams of B sentences (K each, flat rows b*K .. b*K + K - 1) and their finished buffers.

    Args:
        options: ``beam_size`` (K), ``nbest``, ``length_penalty``, ``return_attention``.
        max_lengths: (B,) most output pieces per sentence; src_lengths: (B,); src_len: S, the padded source length.
    """

    def __init__(self, options: DecodeOptions, max_lengths: np.ndarray, src_lengths: np.ndarray, src_len: int) -> None:
        self.options, self.src_lengths = options, src_lengths
        batch_size, beams = len(max_lengths), options.beam_size
        self.batch_size, self.beams = batch_size, beams
        self.max_steps = int(max_lengths.max()) + 1
        self.alpha = np.float32(options.length_penalty)
        self.bound_penalty = length_penalty(max_lengths.astype(np.float32) + np.float32(1.0), self.alpha)
        self.beam_scores = np.full((batch_size, beams), NEG_INF, dtype=np.float32)
        self.beam_scores[:, 0] = 0.0  # all beams start identical: only the first one may expand
        self.finished_scores = np.full((batch_size, beams), NEG_INF, dtype=np.float32)  # best first
        self.finished_tokens = np.full((batch_size, beams, self.max_steps), PAD_ID, dtype=np.int64)
        self.finished_attn = (np.zeros((batch_size, beams, self.max_steps, src_len), dtype=np.float32)
                              if options.return_attention else None)
        self.done = np.zeros(batch_size, dtype=bool)
        self.batch_offsets = (np.arange(batch_size) * beams)[:, None]  # (B, 1)

    def choose(self, step: int, log_probs: np.ndarray, history: np.ndarray,
               attention: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """One step: record the hypotheses that end here and pick the K that continue.

        Args:
            log_probs: (B*K, V) after the logit constraints; history: (B*K, t); attention: (B*K, t + 1, S) or None.
        Returns:
            (B*K,) the rows the new beams extend and (B*K,) the tokens they append.
        """
        batch_size, beams, max_steps = self.batch_size, self.beams, self.max_steps
        vocab_size = log_probs.shape[1]
        candidates = (self.beam_scores.reshape(-1, 1) + log_probs).reshape(batch_size, beams * vocab_size)
        top_scores, top_ids = top_k(candidates, 2 * beams)  # (B, 2K)
        top_origin, top_tokens = top_ids // vocab_size, top_ids % vocab_size
        origin_rows = (self.batch_offsets + top_origin).reshape(-1)  # (B*2K,)

        is_eos = top_tokens == EOS_ID
        finishing = is_eos & (np.arange(2 * beams) < beams) & np.isfinite(top_scores) & ~self.done[:, None]
        if finishing.any():
            penalty = np.float32(length_penalty(float(step + 1), float(self.alpha)))
            new_scores = np.where(finishing, top_scores / penalty, NEG_INF).astype(np.float32)
            new_tokens = np.full((batch_size * 2 * beams, max_steps), PAD_ID, dtype=np.int64)
            new_tokens[:, :step] = history[origin_rows]
            new_tokens[:, step] = top_tokens.reshape(-1)
            all_scores = np.concatenate([self.finished_scores, new_scores], axis=1)  # (B, 3K)
            self.finished_scores, keep = top_k(all_scores, beams)
            all_tokens = np.concatenate([self.finished_tokens, new_tokens.reshape(batch_size, 2 * beams, -1)], axis=1)
            self.finished_tokens = np.take_along_axis(all_tokens, keep[:, :, None], axis=1)
            if attention is not None:
                src_len = attention.shape[2]
                new_attn = np.zeros((batch_size * 2 * beams, max_steps, src_len), dtype=np.float32)
                new_attn[:, : step + 1] = attention[origin_rows]
                all_attn = np.concatenate([self.finished_attn, new_attn.reshape(batch_size, 2 * beams, max_steps,
                                                                                src_len)], axis=1)
                self.finished_attn = np.take_along_axis(all_attn, keep[:, :, None, None], axis=1)

        self.beam_scores, chosen = top_k(np.where(is_eos, NEG_INF, top_scores), beams)  # (B, K)
        chosen_rows = (self.batch_offsets + np.take_along_axis(top_origin, chosen, axis=1)).reshape(-1)
        next_tokens = np.take_along_axis(top_tokens, chosen, axis=1).reshape(-1)
        best_possible = self.beam_scores.max(axis=1) / self.bound_penalty
        self.done |= self.finished_scores[:, self.options.nbest - 1] >= best_possible
        return chosen_rows, next_tokens

    def hypotheses(self) -> list[list[Hypothesis]]:
        """Per sentence its ``nbest`` finished hypotheses, best first."""
        results = []
        for b in range(self.batch_size):
            sentence = []
            for k in range(self.options.nbest):
                score = float(self.finished_scores[b, k])
                if score == float("-inf"):
                    break
                tokens = strip_ids(self.finished_tokens[b, k].tolist())
                attn = None
                if self.finished_attn is not None:
                    attn = self.finished_attn[b, k, : len(tokens) + 1, : int(self.src_lengths[b])]
                sentence.append(Hypothesis(tokens=tokens, score=score, attention=attn))
            results.append(sentence)
        return results
