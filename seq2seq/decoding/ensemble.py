"""What every search mode decodes with: one model, or several averaged per step (an ensemble).

Search calls only :meth:`Ensemble.start` and :meth:`Ensemble.step`; a single model is an ensemble of one, so
greedy, beam, sampling, constrained search and scoring have one code path. Per step the ensemble's score of a
token is the **mean of the members' log-probabilities** (as OpenNMT-py and Marian combine models), so the
ensemble's score of a whole output is the mean of the members' scores. Attention weights are averaged too.

Members must share the tokenizers (checked where models are loaded, :meth:`seq2seq.translator.Translator.load`); each
keeps its own encoder output and recurrent state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from seq2seq.decoding_model import DecodingModel, StepDecoder


@dataclass
class EnsembleState:
    """Per member, the recurrent state of N hypotheses (rows reorder together)."""

    members: list

    def select(self, index: Tensor) -> "EnsembleState":
        """Keep/reorder rows: ``index`` (N',) picks rows of every member's state."""
        return EnsembleState([state.select(index) for state in self.members])


@dataclass
class EnsembleMemory:
    """Per member, its encoder memory (N rows)."""

    members: list

    def repeat_interleave(self, repeats: int) -> "EnsembleMemory":
        """(N, ...) -> (N * repeats, ...) in every member (beam / sampling layout)."""
        return EnsembleMemory([memory.repeat_interleave(repeats) for memory in self.members])

    def select(self, index: Tensor) -> "EnsembleMemory":
        """Keep rows: ``index`` (N',) picks rows of every member's memory."""
        return EnsembleMemory([memory.select(index) for memory in self.members])


class Ensemble:
    """One or more encoder-decoder models decoding as one.

    Args:
        models: :class:`~seq2seq.decoding_model.DecodingModel` s (a Seq2Seq, an onnxruntime model, ...).
    """

    def __init__(self, models: Sequence[DecodingModel]) -> None:
        if not models:
            raise ValueError("an ensemble needs at least one model")
        for model in models:
            if not isinstance(model, DecodingModel) or not isinstance(model.decoder, StepDecoder):
                raise TypeError(f"{type(model).__name__} is not a DecodingModel (seq2seq/decoding_model.py): it "
                                "needs encode(), eval() and a decoder with start(), step() and reads_shared_memory")
        self.models = list(models)

    def __len__(self) -> int:
        return len(self.models)

    def start(self, src: Tensor, src_lengths: Tensor) -> tuple[EnsembleState, EnsembleMemory]:
        """Encode (B, S) ids with (B,) lengths in every member; initial states and memories for B rows."""
        started = [model.decoder.start(model.encode(src, src_lengths)) for model in self.models]
        return EnsembleState([s for s, _ in started]), EnsembleMemory([m for _, m in started])

    def memory_for_beams(self, memory: EnsembleMemory, beams: int) -> EnsembleMemory:
        """Memories of B rows -> for B * ``beams`` hypotheses (sentence b: rows b*beams .. b*beams + beams - 1):
        shared (:meth:`~seq2seq.decoder.Memory.for_beams`) where a member's decoder reads shared memory
        (``reads_shared_memory``), else copied per hypothesis."""
        return EnsembleMemory([
            member.for_beams(beams) if model.decoder.reads_shared_memory
            else member.repeat_interleave(beams)
            for model, member in zip(self.models, memory.members)
        ])

    def step(self, prev_tokens: Tensor, state: EnsembleState, memory: EnsembleMemory) -> tuple[Tensor, EnsembleState, Tensor]:
        """One position for N rows.

        Args:
            prev_tokens: (N,) previous target ids; state / memory: N rows.
        Returns:
            log_probs: (N, V) fp32, the members' mean log-probabilities; the new state;
            attn_weights: (N, S) fp32, the members' mean attention.
        """
        log_probs, states, attentions = [], [], []
        for model, member_state, member_memory in zip(self.models, state.members, memory.members):
            logits, new_state, attn_weights = model.decoder.step(prev_tokens, member_state, member_memory)
            log_probs.append(torch.log_softmax(logits.float(), dim=-1))
            states.append(new_state)
            attentions.append(attn_weights.float())
        if len(self.models) == 1:
            return log_probs[0], EnsembleState(states), attentions[0]
        return (torch.stack(log_probs).mean(dim=0), EnsembleState(states), torch.stack(attentions).mean(dim=0))


def as_ensemble(model) -> Ensemble:
    """A model, a list of models, or an Ensemble -> an Ensemble."""
    if isinstance(model, Ensemble):
        return model
    if isinstance(model, (list, tuple)):
        return Ensemble(model)
    return Ensemble([model])
