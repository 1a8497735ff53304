"""Lexically constrained beam search's candidate selection: outputs that contain given words (dynamic beam allocation).

Post and Vilar (2018), "Fast Lexically Constrained Decoding with Dynamic Beam Allocation". A constraint is a
phrase of target pieces that must appear, contiguously, in the output; it is matched as a string search does
(:class:`ConstraintState`: KMP failure links), so occurrences that overlap a false start, themselves or another
phrase count. Each step, every sentence's candidates are

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

:class:`ConstrainedSelection` is one of the two selection strategies of :func:`seq2seq.decoding.search.beam_search`
(``constraints=``; the other is :class:`~seq2seq.decoding.topk.TopKSelection`): the loop steps the model for the
whole batch at once (``Ensemble.step``) and reorders the beams; the candidate bookkeeping here is per sentence in
Python, which is cheap next to the step for the beam sizes used in practice.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import Tensor

from seq2seq.decoding.hypothesis import Hypothesis, TraceStep, strip_ids
from seq2seq.decoding.logits import length_penalty
from seq2seq.decoding.options import DecodeOptions
from seq2seq.tokenizer import EOS_ID, PAD_ID


@functools.lru_cache(maxsize=4096)
def failure_links(phrase: tuple[int, ...]) -> tuple[int, ...]:
    """KMP failure links: ``links[j]`` is the length of the longest proper prefix of ``phrase[: j + 1]`` that is
    also its suffix (where matching resumes after a mismatch past position j)."""
    links, k = [0] * len(phrase), 0
    for j in range(1, len(phrase)):
        while k and phrase[j] != phrase[k]:
            k = links[k - 1]
        if phrase[j] == phrase[k]:
            k += 1
        links[j] = k
    return tuple(links)


def next_match(phrase: tuple[int, ...], matched: int, token: int) -> int:
    """Pieces of ``phrase`` matched after ``token``, given ``matched`` (< len(phrase)) before it: the longest
    prefix of the phrase that is a suffix of the output (a string-search automaton's step)."""
    links = failure_links(phrase)
    while matched and phrase[matched] != token:
        matched = links[matched - 1]
    return matched + 1 if phrase[matched] == token else 0


@dataclass(frozen=True)
class ConstraintState:
    """Which phrases a hypothesis has met, and how far it is into each of the others.

    Each phrase is matched by its own string-search automaton (KMP failure links) over the whole output, so a
    phrase is met by any occurrence: one overlapping a false start (``[4, 4, 5]`` in ``4 4 4 5``), itself, or
    another phrase. A phrase given twice is met by one occurrence (the output contains it).

    Attributes:
        met: indices of the phrases placed in full.
        progress: per phrase, the pieces of it that end the output so far (0 for a met phrase; () = all 0).
    """

    met: frozenset = frozenset()
    progress: tuple[int, ...] = ()

    @property
    def in_progress(self) -> tuple[int, int] | None:
        """(phrase index, pieces matched) of the unmet phrase the output is furthest into, or None."""
        best = None
        for phrase, matched in enumerate(self.progress):
            if matched and (best is None or matched > best[1]):
                best = (phrase, matched)
        return best

    def pieces_met(self, phrases: list[list[int]]) -> int:
        """Constraint pieces placed so far (full phrases and the matched part of the one furthest in)."""
        current = self.in_progress
        return sum(len(phrases[i]) for i in self.met) + (current[1] if current else 0)

    def complete(self, phrases: list[list[int]]) -> bool:
        return len(self.met) == len(phrases)

    def wanted(self, phrases: list[list[int]]) -> set[int]:
        """Tokens that would advance a constraint next: the next piece of each phrase in progress, else the first
        piece of every unmet phrase."""
        partial = {phrases[i][matched] for i, matched in enumerate(self.progress) if matched}
        return partial or {phrases[i][0] for i in range(len(phrases)) if i not in self.met}

    def advance(self, token: int, phrases: list[list[int]]) -> "ConstraintState":
        """The state after emitting ``token``."""
        before = self.progress or (0,) * len(phrases)
        met, progress = set(self.met), []
        for i, phrase in enumerate(phrases):
            matched = 0 if i in met else next_match(tuple(phrase), before[i], token)
            if matched == len(phrase):
                met.add(i)
                matched = 0
            progress.append(matched)
        return ConstraintState(frozenset(met), tuple(progress))


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


def constraint_room(constraints: list[list[list[int]]], device) -> Tensor:
    """(B,) the pieces each sentence's phrases add to its length limit."""
    return torch.tensor([sum(len(p) for p in phrases) for phrases in constraints], dtype=torch.long, device=device)


class ConstrainedSelection:
    """The beams of B sentences (K each, flat rows b*K .. b*K + K - 1), their constraint states and finished lists:
    a :class:`~seq2seq.decoding.selection.SelectionStrategy`.

    Args:
        constraints: per sentence, its phrases, each a non-empty list of target piece ids.
        options: ``beam_size`` (K), ``nbest``, ``length_penalty``, ``return_attention``.
        max_lengths: (B,) most output pieces per sentence, :func:`constraint_room` included; src_lengths: (B,).
        tracing: keep each step's ended hypotheses for :meth:`trace_record`.
    """

    def __init__(self, constraints: list[list[list[int]]], options: DecodeOptions, max_lengths: Tensor,
                 src_lengths: Tensor, tracing: bool = False) -> None:
        if len(constraints) != max_lengths.size(0) or any(not phrase for phrases in constraints for phrase in phrases):
            raise ValueError("constraints: one list of non-empty phrases per sentence")
        self.constraints, self.options = constraints, options
        batch_size, beams = max_lengths.size(0), options.beam_size
        self.batch_size, self.beams, self.device = batch_size, beams, max_lengths.device
        self.total = [sum(len(p) for p in phrases) for phrases in constraints]
        self.src_len = src_lengths.tolist()
        self.row_max_lengths = max_lengths.repeat_interleave(beams)
        self.bound_penalty = length_penalty(max_lengths.float() + 1.0, options.length_penalty).tolist()
        self.beam_scores = [[0.0] + [float("-inf")] * (beams - 1) for _ in range(batch_size)]
        self.beam_states = [[ConstraintState()] * beams for _ in range(batch_size)]  # immutable: sharing is safe
        self.finished: list[list[_Finished]] = [[] for _ in range(batch_size)]
        self.done = [False] * batch_size
        self.tracing = tracing
        self.step_ended: list[list[tuple[list[int], float]]] = []  # per sentence: (ids + EOS, score) ended this step

    def _candidate_pairs(self, top_ids: list[list[int]], best_tokens: list[int], vocab_size: int):
        """Per sentence the (beam, token) pairs worth scoring, and the EOS pairs that may end a hypothesis."""
        beams = self.beams
        pairs_of = [[] for _ in range(self.batch_size)]
        may_finish_of = [set() for _ in range(self.batch_size)]
        for b in range(self.batch_size):
            if self.done[b]:
                continue
            phrases, scores, states = self.constraints[b], self.beam_scores[b], self.beam_states[b]
            pairs = {(i // vocab_size, i % vocab_size) for i in top_ids[b]}
            may_finish = {(i // vocab_size, EOS_ID) for i in top_ids[b][:beams] if i % vocab_size == EOS_ID}
            if phrases:  # with constraints, a hypothesis that has met them all may always end
                may_finish |= {(k, EOS_ID) for k in range(beams) if scores[k] > float("-inf")
                               and states[k].complete(phrases)}
                pairs |= may_finish
            for k in range(beams):
                if scores[k] > float("-inf"):
                    pairs.add((k, best_tokens[b * beams + k]))
                    pairs |= {(k, t) for t in states[k].wanted(phrases)}
            pairs_of[b], may_finish_of[b] = sorted(pairs), may_finish
        return pairs_of, may_finish_of

    def choose(self, step: int, log_probs: Tensor, history: Tensor, attention: Tensor | None) -> tuple[Tensor, Tensor]:
        """One step: record the hypotheses that end here and pick the K that continue (see the module's rules).

        Args:
            log_probs: (B*K, V) the step's log-probabilities after the logit constraints (EOS is banned here
                for hypotheses that have not met their constraints, unless at their length limit).
            history: (B*K, t) the ids generated so far; attention: (B*K, t + 1, S) with this step's, or None.
        Returns:
            (B*K,) the rows the new beams extend and (B*K,) the tokens they append.
        """
        batch_size, beams, device = self.batch_size, self.beams, self.device
        constraints, beam_scores, beam_states, finished = self.constraints, self.beam_scores, self.beam_states, self.finished
        incomplete = torch.tensor([not s.complete(constraints[r // beams]) for r, s in
                                   enumerate(cs for sentence in beam_states for cs in sentence)], device=device)
        log_probs[:, EOS_ID] = log_probs[:, EOS_ID].masked_fill(incomplete & (self.row_max_lengths > step), float("-inf"))
        totals = (torch.tensor([s for sentence in beam_scores for s in sentence], device=device).unsqueeze(1) + log_probs)
        top_ids = totals.view(batch_size, -1).topk(2 * beams, dim=1).indices.tolist()
        best_tokens = totals.argmax(dim=1).tolist()
        pairs_of, may_finish_of = self._candidate_pairs(top_ids, best_tokens, log_probs.size(1))
        # every candidate's score in one read (not one device read per candidate)
        flat = [(b * beams + k, token) for b in range(batch_size) for k, token in pairs_of[b]]
        flat_scores = totals[[r for r, _ in flat], [t for _, t in flat]].tolist() if flat else []
        scores_of, start = [], 0
        for b in range(batch_size):
            scores_of.append(flat_scores[start : start + len(pairs_of[b])])
            start += len(pairs_of[b])

        origins, tokens, ended = [], [], [[] for _ in range(batch_size)]
        for b in range(batch_size):
            phrases, chosen = constraints[b], []
            if not self.done[b]:
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
                        attn = attention[row, : step + 1, : self.src_len[b]].cpu() if attention is not None else None
                        normalized = score / length_penalty(float(step + 1), self.options.length_penalty)
                        finished[b].append(_Finished(new_state.complete(phrases), normalized,
                                                     strip_ids(history[row].tolist()), attn))
                        if self.tracing:
                            ended[b].append((history[row].tolist() + [EOS_ID], normalized))
                    else:
                        candidates.append((score, new_state.pieces_met(phrases), (k, token, score, new_state)))
                chosen = allocate(candidates, beams, self.total[b])
            finished[b].sort(reverse=True)
            del finished[b][beams:]
            chosen += [(0, PAD_ID, float("-inf"), ConstraintState())] * (beams - len(chosen))
            beam_scores[b] = [score for _, _, score, _ in chosen]
            beam_states[b] = [cs for _, _, _, cs in chosen]
            origins += [b * beams + k for k, _, _, _ in chosen]
            tokens += [token for _, token, _, _ in chosen]
            self._check_done(b)
        self.step_ended = ended
        return torch.tensor(origins, device=device), torch.tensor(tokens, device=device)

    def _check_done(self, b: int) -> None:
        """Done when no live hypothesis is left, or the n-best meet every constraint and none can be beaten."""
        nbest, finished = self.options.nbest, self.finished[b]
        best_active = max(self.beam_scores[b])
        enough = len(finished) >= nbest and all(f.complete for f in finished[:nbest])
        if best_active == float("-inf") or (enough and finished[nbest - 1].score >= best_active / self.bound_penalty[b]):
            self.done[b] = True

    def done_sentences(self) -> Tensor:
        """(B,) bool: the sentences whose search is over (their rows need no more model steps)."""
        return torch.tensor(self.done, device=self.device)

    def trace_record(self, history: Tensor) -> TraceStep:
        """This step for ``beam_search``'s trace: the beams kept (``history`` (B*K, t + 1) after the move) and, as
        the candidates, the hypotheses that ended at the step (every one joins the finished list; C is the most
        any sentence had, at least 1; PAD, score -inf and not finishing past a sentence's own)."""
        width = history.size(1)
        count = max([1] + [len(entries) for entries in self.step_ended])
        candidate_tokens = torch.full((self.batch_size, count, width), PAD_ID, dtype=torch.long)
        candidate_scores = torch.full((self.batch_size, count), float("-inf"))
        finishing = torch.zeros(self.batch_size, count, dtype=torch.bool)
        for b, entries in enumerate(self.step_ended):
            for c, (ids, score) in enumerate(entries):
                candidate_tokens[b, c, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                candidate_scores[b, c], finishing[b, c] = score, True
        return TraceStep(tokens=history.view(self.batch_size, self.beams, -1).cpu(),
                         scores=torch.tensor(self.beam_scores), candidate_tokens=candidate_tokens, finishing=finishing,
                         candidate_scores=candidate_scores, done=torch.tensor(self.done))

    def hypotheses(self) -> list[list[Hypothesis]]:
        """Per sentence its ``nbest`` hypotheses, those meeting every constraint first, best score first."""
        return [[Hypothesis(tokens=f.tokens, score=f.score, attention=f.attention) for f in sentence[: self.options.nbest]]
                for sentence in self.finished]
