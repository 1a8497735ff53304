"""The interface of beam search's selection strategies: what :func:`seq2seq.decoding.search.beam_search` calls
each step, declared once (as fairseq's ``search.Search``).

The loop steps the model, applies the logit constraints and hands the step's log-probabilities to a strategy,
which records the hypotheses that end, picks the ``K`` rows that continue and says which sentences are done.
Two strategies exist: :class:`~seq2seq.decoding.topk.TopKSelection` (plain beam search, in tensors) and
:class:`~seq2seq.decoding.constrained.ConstrainedSelection` (outputs that must contain given phrases). A new
mechanism in the search (a copy path, a confidence) is another class with these four methods.
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

from torch import Tensor

from seq2seq.decoding.hypothesis import Hypothesis, TraceStep


@runtime_checkable
class SelectionStrategy(Protocol):
    """The beams of B sentences (K each, flat rows ``b*K .. b*K + K - 1``) and their finished hypotheses."""

    def choose(self, step: int, log_probs: Tensor, history: Tensor,
               attention: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """One step: record the hypotheses that end here and pick the K per sentence that continue.

        Args:
            step: pieces generated so far; log_probs: (B*K, V) after the logit constraints;
            history: (B*K, t) ids generated so far; attention: (B*K, t + 1, S) with this step's, or None.
        Returns:
            (B*K,) the rows the new beams extend and (B*K,) the tokens they append.
        """
        ...

    def done_sentences(self) -> Tensor:
        """(B,) bool: the sentences whose search is over (their rows need no more model steps)."""
        ...

    def trace_record(self, history: Tensor) -> TraceStep:
        """The step just chosen, for a trace; ``history`` (B*K, t + 1) is the beams after the move."""
        ...

    def hypotheses(self) -> list[list[Hypothesis]]:
        """Per sentence its ``nbest`` finished hypotheses, best first."""
        ...
