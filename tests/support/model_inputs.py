"""Small models (eval mode, dropout 0) and random padded batches for the encoder, attention, decoder and model tests,
and the reference paths they are checked against (the step loop, the summed NLL)."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from seq2seq.config import ModelConfig
from seq2seq.model import Seq2Seq, build_model
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID

SRC_VOCAB, TGT_VOCAB = 11, 13
EMB, DEC_HIDDEN = 8, 10
FIRST_REAL_ID = 4  # ids below are <pad> <unk> <s> </s>
ATOL = 1e-5
ATTENTIONS = ["bahdanau", "luong_dot", "luong_general"]
RNN_DIRS = list(itertools.product(["gru", "lstm"], [False, True]))
RNN_DIRS_IDS = [f"{rnn}-{'bi' if bi else 'uni'}" for rnn, bi in RNN_DIRS]


def make_model(
    rnn_type: str = "gru", bidirectional: bool = True, encoder_hidden_size: int | None = None, **overrides
) -> Seq2Seq:
    """A small model in eval mode (dropout 0). By default the encoder output size equals the decoder hidden
    size, so ``luong_dot`` and bridge ``last`` are possible."""
    if encoder_hidden_size is None:
        encoder_hidden_size = DEC_HIDDEN // (2 if bidirectional else 1)
    cfg = ModelConfig(
        rnn_type=rnn_type,
        emb_size=EMB,
        encoder_hidden_size=encoder_hidden_size,
        bidirectional=bidirectional,
        decoder_hidden_size=DEC_HIDDEN,
        dropout=0.0,
        **{"input_feeding": True, **overrides},  # input feeding, the default before issue 36, unless told otherwise
    )
    return build_model(cfg, SRC_VOCAB, TGT_VOCAB).eval()


def pad_rows(rows: list[list[int]], length: int | None = None) -> torch.Tensor:
    length = length or max(len(row) for row in rows)
    out = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def random_batch(src_lengths: list[int], tgt_lengths: list[int]) -> tuple[torch.Tensor, ...]:
    """(src, src_lengths, tgt_in, tgt_out): random real ids, padded with PAD; tgt_in = BOS + y, tgt_out = y + EOS."""
    src = [torch.randint(FIRST_REAL_ID, SRC_VOCAB, (n,)).tolist() for n in src_lengths]
    tgt = [torch.randint(FIRST_REAL_ID, TGT_VOCAB, (n,)).tolist() for n in tgt_lengths]
    return (
        pad_rows(src),
        torch.tensor(src_lengths),
        pad_rows([[BOS_ID] + y for y in tgt]),
        pad_rows([y + [EOS_ID] for y in tgt]),
    )


SRC_LENGTHS, TGT_LENGTHS = [5, 2, 7, 1], [3, 6, 1, 4]  # unsorted; include 1 and the full length


def state_tensors(state) -> list[torch.Tensor]:
    return [state.hidden] + ([state.cell] if state.cell is not None else [])


# ---------------------------------------------------------------------------- equivalent paths
def stepped_logits(model: Seq2Seq, src, src_lengths, tgt_in) -> torch.Tensor:
    """Logits from calling decoder.step once per gold target position (the search's code path)."""
    state, memory = model.decoder.start(model.encode(src, src_lengths))
    logits = []
    for t in range(tgt_in.size(1)):
        step_logits, state, _ = model.decoder.step(tgt_in[:, t], state, memory)
        logits.append(step_logits)
    return torch.stack(logits, dim=1)


def summed_loss(model: Seq2Seq, src, src_lengths, tgt_in, tgt_out, **options) -> tuple[torch.Tensor, int]:
    """The model's forward pass with targets: (its summed loss, the real target tokens counted here)."""
    _, loss = model(src, src_lengths, tgt_in, tgt_out, **options)
    return loss, int(tgt_out.ne(PAD_ID).sum())


def summed_nll(logits: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD_ID, reduction="sum")


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter ~ N(0, 0.25), seeded: values far from any initialization, so a mix-up shows."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn_like(param) * 0.5)
