"""Lexically constrained beam search: outputs that contain given words (dynamic beam allocation).

Post and Vilar (2018), "Fast Lexically Constrained Decoding with Dynamic Beam Allocation". A constraint is a
phrase of target pieces that must appear, contiguously, in the output. Each step, every sentence's candidates are

1. the usual ``2 * beam_size`` best (beam x vocab) extensions (as in beam search, only EOS among the best
   ``beam_size`` ends a hypothesis),
2. for every live hypothesis, each token that advances an unmet constraint (the next piece of a phrase it is in
   the middle of, else the first piece of every unmet phrase), and
3. for every live hypothesis, its single best token;

and the ``beam_size`` slots are shared out among *banks* of candidates grouped by how many constraint pieces they
have met (``beam_size // (pieces + 1)`` each, the rest to the fullest banks; slots a bank cannot use go to the
remaining candidates with the most pieces met, best score first). So hypotheses that have placed constraints are
not pushed out by better-scoring ones that have not. EOS is allowed only once every constraint is met, unless the
hypothesis is at its length limit (extended by the constraints' length); outputs that meet all constraints rank
before any that could not.

The model is stepped for the whole batch at once (``Ensemble.step``); the candidate bookkeeping is per sentence in
Python, which is cheap next to the step for the beam sizes used in practice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from seq2seq.decoding.ensemble import as_ensemble
from seq2seq.decoding.logits import length_penalty, next_log_probs
from seq2seq.decoding.search import Hypothesis, _strip, limits_with_prefix, start_beams
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass(frozen=True)
class ConstraintState:
    """Which phrases a hypothesis has met, and the phrase it is in the middle of.

    Attributes:
        met: indices of the phrases placed in full.
        in_progress: (phrase index, pieces matched so far) or None.
    """

    met: frozenset = frozenset()
    in_progress: tuple[int, int] | None = None

    def pieces_met(self, phrases: list[list[int]]) -> int:
        """Constraint pieces placed so far (full phrases and the matched part of the current one)."""
        return sum(len(phrases[i]) for i in self.met) + (self.in_progress[1] if self.in_progress else 0)

    def complete(self, phrases: list[list[int]]) -> bool:
        return len(self.met) == len(phrases)

    def wanted(self, phrases: list[list[int]]) -> set[int]:
        """Tokens that would advance a constraint next."""
        if self.in_progress is not None:
            phrase, matched = self.in_progress
            return {phrases[phrase][matched]}
        return {phrases[i][0] for i in range(len(phrases)) if i not in self.met}

    def advance(self, token: int, phrases: list[list[int]]) -> "ConstraintState":
        """The state after emitting ``token`` (a broken phrase is given up; the token may start another)."""
        if self.in_progress is not None:
            phrase, matched = self.in_progress
            if phrases[phrase][matched] == token:
                if matched + 1 == len(phrases[phrase]):
                    return ConstraintState(self.met | {phrase}, None)
                return ConstraintState(self.met, (phrase, matched + 1))
        for i, pieces in enumerate(phrases):
            if i not in self.met and pieces[0] == token:
                return ConstraintState(self.met | {i}, None) if len(pieces) == 1 else ConstraintState(self.met, (i, 1))
        return ConstraintState(self.met, None)


@dataclass(order=True)
class _Finished:
    complete: bool
    score: float
    tokens: list[int] = field(compare=False)
    attention: Tensor | None = field(compare=False, default=None)


def allocate(candidates: list[tuple[float, int, object]], beam_size: int, total_pieces: int) -> list:
    """Pick ``beam_size`` of ``(score, pieces_met, item)`` candidates by dynamic beam allocation.

    Returns the chosen items, best bank first, best score first within a bank.
    """
    banks: dict[int, list] = {}
    for candidate in sorted(candidates, key=lambda c: -c[0]):
        banks.setdefault(candidate[1], []).append(candidate)
    slots = [beam_size // (total_pieces + 1)] * (total_pieces + 1)
    for bank in range(beam_size % (total_pieces + 1)):
        slots[total_pieces - bank] += 1  # the remainder goes to the banks with the most met
    chosen, leftover = [], []
    for bank in range(total_pieces, -1, -1):
        members = banks.get(bank, [])
        chosen += members[: slots[bank]]
        leftover += members[slots[bank] :]
    leftover.sort(key=lambda c: (-c[1], -c[0]))
    chosen += leftover[: beam_size - len(chosen)]
    return [item for _, _, item in chosen]


@torch.inference_mode()
def constrained_beam_search(
    model,
    src: Tensor,
    src_lengths: Tensor,
    constraints: list[list[list[int]]],
    beam_size: int = 5,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    length_penalty_alpha: float = 1.0,
    min_length: int = 0,
    no_repeat_ngram: int = 0,
    nbest: int = 1,
    return_attention: bool = False,
    prefix: Tensor | None = None,
) -> list[list[Hypothesis]]:
    """Beam search whose outputs contain every constraint phrase of their sentence.

    Args:
        model: a Seq2Seq, a list of them, or an Ensemble; src: (B, S) source ids; src_lengths: (B,).
        constraints: per sentence, its phrases, each a non-empty list of target piece ids.
        prefix: (B, P) forced target ids (PAD past each row's prefix), or None.
    Returns:
        per sentence its ``nbest`` hypotheses, those meeting every constraint first, best score first.
    """
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be in [1, beam_size={beam_size}], got {nbest}")
    if len(constraints) != src.size(0) or any(not phrase for phrases in constraints for phrase in phrases):
        raise ValueError("constraints: one list of non-empty phrases per sentence")
    model = as_ensemble(model)
    batch_size, beams, device = src.size(0), beam_size, src.device
    rows = batch_size * beams
    total = [sum(len(p) for p in phrases) for phrases in constraints]
    src_len = src_lengths.tolist()
    state, memory, row_prefix = start_beams(model, src, src_lengths, beams, prefix)
    max_lengths = limits_with_prefix(src_lengths, max_len_a, max_len_b, prefix).to(device)
    max_lengths = max_lengths + torch.tensor(total, device=device)  # room for the constraints
    row_max_lengths = max_lengths.repeat_interleave(beams)
    shortest_limit = int(max_lengths.min())  # once: no device sync per step
    bound_penalty = length_penalty(max_lengths.float() + 1.0, length_penalty_alpha).tolist()

    beam_scores = [[0.0] + [float("-inf")] * (beams - 1) for _ in range(batch_size)]
    beam_states = [[ConstraintState()] * beams for _ in range(batch_size)]
    history = torch.empty(rows, 0, dtype=torch.long, device=device)
    attn_history = torch.empty(rows, 0, src.size(1), device=device)
    prev_tokens = torch.full((rows,), BOS_ID, dtype=torch.long, device=device)
    finished: list[list[_Finished]] = [[] for _ in range(batch_size)]
    done = [False] * batch_size

    for step in range(int(max_lengths.max()) + 1):
        log_probs, state, attn_weights = next_log_probs(
            model, prev_tokens, state, memory, history, row_max_lengths, min_length, no_repeat_ngram,
            shortest_limit, row_prefix,
        )
        incomplete = torch.tensor([not s.complete(constraints[r // beams]) for r, s in
                                   enumerate(cs for sentence in beam_states for cs in sentence)], device=device)
        log_probs[:, EOS_ID] = log_probs[:, EOS_ID].masked_fill(incomplete & (row_max_lengths > step), float("-inf"))
        totals = (torch.tensor([s for sentence in beam_scores for s in sentence], device=device).unsqueeze(1) + log_probs)
        top_ids = totals.view(batch_size, -1).topk(2 * beams, dim=1).indices.tolist()
        best_tokens = totals.argmax(dim=1).tolist()
        vocab_size = log_probs.size(1)
        if return_attention:
            attn_history_ext = torch.cat([attn_history, attn_weights.unsqueeze(1)], dim=1)

        pairs_of, may_finish_of = [set()] * batch_size, [set()] * batch_size
        for b in range(batch_size):
            if done[b]:
                continue
            phrases = constraints[b]
            pairs = {(i // vocab_size, i % vocab_size) for i in top_ids[b]}
            may_finish = {(i // vocab_size, EOS_ID) for i in top_ids[b][:beams] if i % vocab_size == EOS_ID}
            if phrases:  # with constraints, a hypothesis that has met them all may always end
                may_finish |= {(k, EOS_ID) for k in range(beams) if beam_scores[b][k] > float("-inf")
                               and beam_states[b][k].complete(phrases)}
                pairs |= may_finish
            for k in range(beams):
                if beam_scores[b][k] > float("-inf"):
                    pairs.add((k, best_tokens[b * beams + k]))
                    pairs |= {(k, t) for t in beam_states[b][k].wanted(phrases)}
            pairs_of[b], may_finish_of[b] = sorted(pairs), may_finish
        # every candidate's score in one read (not one device read per candidate)
        flat = [(b * beams + k, token) for b in range(batch_size) for k, token in pairs_of[b]]
        flat_scores = totals[[r for r, _ in flat], [t for _, t in flat]].tolist() if flat else []
        scores_of, start = [], 0
        for b in range(batch_size):
            scores_of.append(flat_scores[start : start + len(pairs_of[b])])
            start += len(pairs_of[b])

        origins, tokens = [], []
        for b in range(batch_size):
            phrases, chosen = constraints[b], []
            if not done[b]:
                may_finish = may_finish_of[b]
                candidates = []
                for (k, token), score in zip(pairs_of[b], scores_of[b]):
                    row = b * beams + k
                    if score == float("-inf"):
                        continue
                    new_state = beam_states[b][k].advance(token, phrases)
                    if token == EOS_ID:
                        if (k, token) not in may_finish:  # as in beam search, only EOS among the best K ends
                            continue
                        attn = attn_history_ext[row, : step + 1, : src_len[b]].cpu() if return_attention else None
                        tokens_so_far = history[row].tolist()
                        normalized = score / length_penalty(float(step + 1), length_penalty_alpha)
                        finished[b].append(_Finished(new_state.complete(phrases), normalized, _strip(tokens_so_far), attn))
                    else:
                        candidates.append((score, new_state.pieces_met(phrases), (k, token, score, new_state)))
                chosen = allocate(candidates, beams, total[b])
            finished[b].sort(reverse=True)
            del finished[b][beams:]
            chosen += [(0, PAD_ID, float("-inf"), ConstraintState())] * (beams - len(chosen))
            beam_scores[b] = [score for _, _, score, _ in chosen]
            beam_states[b] = [cs for _, _, _, cs in chosen]
            origins += [b * beams + k for k, _, _, _ in chosen]
            tokens += [token for _, token, _, _ in chosen]
            best_active = max(beam_scores[b])
            enough = len(finished[b]) >= nbest and all(f.complete for f in finished[b][:nbest])
            if best_active == float("-inf") or (enough and finished[b][nbest - 1].score >= best_active / bound_penalty[b]):
                done[b] = True
        if all(done):
            break
        origin_rows = torch.tensor(origins, device=device)
        prev_tokens = torch.tensor(tokens, device=device)
        state = state.select(origin_rows)
        history = torch.cat([history.index_select(0, origin_rows), prev_tokens.unsqueeze(1)], dim=1)
        if return_attention:
            attn_history = attn_history_ext.index_select(0, origin_rows)

    results = []
    for b in range(batch_size):
        results.append([Hypothesis(tokens=f.tokens, score=f.score, attention=f.attention) for f in finished[b][:nbest]])
    return results
