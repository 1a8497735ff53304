"""Plain beam search's candidate selection: the best ``2K`` of ``beam x vocab``, all in tensors.

One of the two selection strategies of :func:`seq2seq.decoding.search.beam_search` (the other is
:class:`~seq2seq.decoding.constrained.ConstrainedSelection`). Each step it scores every sentence's ``K x V``
extensions with one ``topk``; candidates ending in EOS among the best ``K`` join a per-sentence finished buffer
(tensors, best first), and the ``K`` best that do not end in EOS continue. A sentence is done once its n-th best
finished hypothesis cannot be beaten by any live one (an upper bound on the length-normalized score a live beam
can still reach). There is no Python loop over sentences or beams.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seq2seq.decoding.hypothesis import Hypothesis, TraceStep, strip_ids
from seq2seq.decoding.logits import length_penalty
from seq2seq.decoding.options import DecodeOptions
from seq2seq.tokenizer import EOS_ID, PAD_ID


class TopKSelection:
    """The beams of B sentences (K each, flat rows b*K .. b*K + K - 1) and their finished buffers: a
    :class:`~seq2seq.decoding.selection.SelectionStrategy`.

    Args:
        options: ``beam_size`` (K), ``nbest``, ``length_penalty``, ``return_attention``.
        max_lengths: (B,) most output pieces per sentence; src_lengths: (B,); src_len: S, the padded source length.
        tracing: keep each step's candidates for :meth:`trace_record`.
    """

    def __init__(self, options: DecodeOptions, max_lengths: Tensor, src_lengths: Tensor, src_len: int,
                 tracing: bool = False) -> None:
        self.options, self.src_lengths, self.tracing = options, src_lengths, tracing
        batch_size, beams, device = max_lengths.size(0), options.beam_size, max_lengths.device
        self.batch_size, self.beams = batch_size, beams
        self.max_steps = int(max_lengths.max()) + 1
        self.bound_penalty = length_penalty(max_lengths.float() + 1.0, options.length_penalty)  # (B,) largest possible
        neg_inf = float("-inf")
        self.beam_scores = torch.full((batch_size, beams), neg_inf, device=device)
        self.beam_scores[:, 0] = 0.0  # all beams start identical: only the first one may expand
        self.finished_scores = torch.full((batch_size, beams), neg_inf, device=device)  # sorted, best first
        self.finished_tokens = torch.full((batch_size, beams, self.max_steps), PAD_ID, dtype=torch.long, device=device)
        self.finished_attn = (torch.zeros(batch_size, beams, self.max_steps, src_len, device=device)
                              if options.return_attention else None)
        self.done = torch.zeros(batch_size, dtype=torch.bool, device=device)
        self.rank = torch.arange(2 * beams, device=device).unsqueeze(0)  # (1, 2K)
        self.batch_offsets = (torch.arange(batch_size, device=device) * beams).unsqueeze(1)  # (B, 1)
        self.step_candidates: tuple[Tensor, Tensor, Tensor] | None = None  # (tokens, finishing, scores)

    def choose(self, step: int, log_probs: Tensor, history: Tensor, attention: Tensor | None) -> tuple[Tensor, Tensor]:
        """One step: record the hypotheses that end here and pick the K that continue.

        Args:
            log_probs: (B*K, V) the step's log-probabilities after the logit constraints.
            history: (B*K, t) the ids generated so far; attention: (B*K, t + 1, S) with this step's, or None.
        Returns:
            (B*K,) the rows the new beams extend and (B*K,) the tokens they append.
        """
        batch_size, beams, max_steps, neg_inf = self.batch_size, self.beams, self.max_steps, float("-inf")
        alpha = self.options.length_penalty
        vocab_size = log_probs.size(1)
        candidates = (self.beam_scores.view(-1, 1) + log_probs).view(batch_size, beams * vocab_size)
        top_scores, top_ids = candidates.topk(2 * beams, dim=1)  # (B, 2K)
        top_origin = top_ids // vocab_size  # beam each candidate extends
        top_tokens = top_ids % vocab_size
        origin_rows = (self.batch_offsets + top_origin).view(-1)  # (B*2K,) rows of the flat layout

        # 1. Candidates ending in EOS among the top K join the finished buffer (best ``beams`` kept).
        is_eos = top_tokens.eq(EOS_ID)
        finishing = is_eos & (self.rank < beams) & top_scores.isfinite() & ~self.done.unsqueeze(1)
        if bool(finishing.any()):
            normalized = top_scores / length_penalty(float(step + 1), alpha)
            new_scores = normalized.masked_fill(~finishing, neg_inf)
            new_tokens = torch.cat([history.index_select(0, origin_rows), top_tokens.view(-1, 1)], dim=1)
            new_tokens = torch.nn.functional.pad(new_tokens, (0, max_steps - step - 1), value=PAD_ID)
            all_scores = torch.cat([self.finished_scores, new_scores], dim=1)  # (B, 3K)
            self.finished_scores, keep = all_scores.topk(beams, dim=1)
            all_tokens = torch.cat([self.finished_tokens, new_tokens.view(batch_size, 2 * beams, -1)], dim=1)
            self.finished_tokens = all_tokens.gather(1, keep.unsqueeze(-1).expand(-1, -1, max_steps))
            if attention is not None:
                src_len = attention.size(2)
                new_attn = attention.index_select(0, origin_rows)
                new_attn = torch.nn.functional.pad(new_attn, (0, 0, 0, max_steps - step - 1))
                all_attn = torch.cat([self.finished_attn, new_attn.view(batch_size, 2 * beams, max_steps, src_len)],
                                     dim=1)
                self.finished_attn = all_attn.gather(
                    1, keep.view(batch_size, beams, 1, 1).expand(-1, -1, max_steps, src_len))

        if self.tracing:  # the candidates as they stand before the beam moves on
            candidates_tokens = torch.cat([history.index_select(0, origin_rows), top_tokens.view(-1, 1)], dim=1)
            self.step_candidates = (candidates_tokens.view(batch_size, 2 * beams, -1).cpu(), finishing.cpu(),
                                    (top_scores / length_penalty(float(step + 1), alpha)).cpu())

        # 2. The K best candidates that do not end in EOS continue.
        self.beam_scores, chosen = top_scores.masked_fill(is_eos, neg_inf).topk(beams, dim=1)  # (B, K)
        chosen_rows = (self.batch_offsets + top_origin.gather(1, chosen)).view(-1)  # (B*K,)
        next_tokens = top_tokens.gather(1, chosen).view(-1)

        # 3. Done when no active beam can still beat the n-th best finished one.
        best_possible = self.beam_scores.max(dim=1).values / self.bound_penalty  # scores are <= 0 and only fall
        self.done |= self.finished_scores[:, self.options.nbest - 1] >= best_possible
        return chosen_rows, next_tokens

    def done_sentences(self) -> Tensor:
        """(B,) bool: the sentences whose search is over (their rows need no more model steps)."""
        return self.done

    def trace_record(self, history: Tensor) -> TraceStep:
        """This step for ``beam_search``'s trace: the top 2K candidates of :meth:`choose` (kept when built with
        ``tracing``) and the beams kept (``history`` (B*K, t + 1) after the move)."""
        candidate_tokens, finishing, candidate_scores = self.step_candidates
        return TraceStep(tokens=history.view(self.batch_size, self.beams, -1).cpu(), scores=self.beam_scores.cpu(),
                         candidate_tokens=candidate_tokens, finishing=finishing, candidate_scores=candidate_scores,
                         done=self.done.cpu().clone())  # done changes in place

    def hypotheses(self) -> list[list[Hypothesis]]:
        """Per sentence its ``nbest`` finished hypotheses, best first."""
        results = []
        scores_list = self.finished_scores.tolist()
        tokens_list = self.finished_tokens.tolist()
        for b in range(self.batch_size):
            sentence = []
            for k in range(self.options.nbest):
                if scores_list[b][k] == float("-inf"):
                    break
                tokens = strip_ids(tokens_list[b][k])
                attn = None
                if self.finished_attn is not None:
                    attn = self.finished_attn[b, k, : len(tokens) + 1, : int(self.src_lengths[b])].cpu()
                sentence.append(Hypothesis(tokens=tokens, score=scores_list[b][k], attention=attn))
            results.append(sentence)
        return results
