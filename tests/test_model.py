"""Seq2Seq as a whole: shapes, padding invariance, the loss, the reference-RNN model against the fused one, tied
embeddings, scheduled sampling, and a toy task learned. (Encoder, attention and decoder: test_encoder.py,
test_attention.py, test_decoder.py.)"""

from __future__ import annotations

import random
import time

import pytest
import torch
from support.model_inputs import (
    summed_loss,
    ATOL,
    DEC_HIDDEN,
    EMB,
    FIRST_REAL_ID,
    RNN_DIRS,
    RNN_DIRS_IDS,
    SRC_LENGTHS,
    TGT_LENGTHS,
    TGT_VOCAB,
    make_model,
    pad_rows,
    random_batch,
    state_tensors,
    stepped_logits,
    summed_nll,
)
from support.search_calls import run_greedy

from seq2seq.config import ModelConfig
from seq2seq.model import build_model
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("rnn_type,bidirectional", RNN_DIRS, ids=RNN_DIRS_IDS)
@pytest.mark.parametrize("encoder_layers,decoder_layers", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_shapes(rnn_type, bidirectional, encoder_layers, decoder_layers):
    model = make_model(rnn_type, bidirectional, encoder_layers=encoder_layers, decoder_layers=decoder_layers)
    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    batch, src_len, tgt_len = src.size(0), src.size(1), tgt_in.size(1)
    memory_size = model.encoder.output_size
    assert memory_size == DEC_HIDDEN

    enc = model.encode(src, src_lengths)
    assert enc.outputs.shape == (batch, src_len, memory_size)
    assert torch.equal(enc.pad_mask, src.eq(PAD_ID))
    assert enc.final_hidden.shape == (encoder_layers, batch, memory_size)
    if rnn_type == "lstm":
        assert enc.final_cell.shape == (encoder_layers, batch, memory_size)
    else:
        assert enc.final_cell is None
    assert enc.outputs[enc.pad_mask].abs().max() == 0

    state, memory = model.decoder.start(enc)
    for tensor in state_tensors(state):
        assert tensor.shape == (decoder_layers, batch, DEC_HIDDEN)
    assert (state.cell is not None) == (rnn_type == "lstm")
    assert state.attn_vector.shape == (batch, model.decoder.attn_vector_size)
    assert memory.values.shape == (batch, src_len, memory_size)

    logits, new_state, attn = model.decoder.step(tgt_in[:, 0], state, memory)
    assert logits.shape == (batch, TGT_VOCAB)
    assert attn.shape == (batch, src_len)
    for old, new in zip(state_tensors(state), state_tensors(new_state)):
        assert new.shape == old.shape

    logits, attn = model.decoder(tgt_in, enc)
    assert logits.shape == (batch, tgt_len, TGT_VOCAB)
    assert attn.shape == (batch, tgt_len, src_len)
    logits, loss = model(src, src_lengths, tgt_in)  # one return shape: (logits, loss), loss None without targets
    assert logits.shape == (batch, tgt_len, TGT_VOCAB) and loss is None
    with_targets, _ = model(src, src_lengths, tgt_in, tgt_out)
    torch.testing.assert_close(with_targets, logits, atol=0, rtol=0)
    loss, num_tokens = summed_loss(model, src, src_lengths, tgt_in, tgt_out)
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss)
    assert num_tokens == sum(TGT_LENGTHS) + len(TGT_LENGTHS)


# ---------------------------------------------------------------------------- padding invariance
@pytest.mark.parametrize("rnn_type,bidirectional", RNN_DIRS, ids=RNN_DIRS_IDS)
@pytest.mark.parametrize("input_feeding", [True, False], ids=["feed", "nofeed"])
def test_padding_invariance(rnn_type, bidirectional, input_feeding):
    model = make_model(rnn_type, bidirectional, encoder_layers=2, decoder_layers=2, input_feeding=input_feeding)
    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    enc = model.encode(src, src_lengths)
    logits, attn = model.decoder(tgt_in, enc)
    losses = []
    for i, (n, m) in enumerate(zip(SRC_LENGTHS, TGT_LENGTHS)):
        alone_src, alone_tgt = src[i : i + 1, :n], tgt_in[i : i + 1, : m + 1]
        alone = model.encode(alone_src, src_lengths[i : i + 1])
        torch.testing.assert_close(alone.outputs[0], enc.outputs[i, :n], atol=ATOL, rtol=0)
        torch.testing.assert_close(alone.final_hidden[:, 0], enc.final_hidden[:, i], atol=ATOL, rtol=0)
        if rnn_type == "lstm":
            torch.testing.assert_close(alone.final_cell[:, 0], enc.final_cell[:, i], atol=ATOL, rtol=0)
        alone_logits, alone_attn = model.decoder(alone_tgt, alone)
        torch.testing.assert_close(alone_logits[0], logits[i, : m + 1], atol=ATOL, rtol=0)
        torch.testing.assert_close(alone_attn[0], attn[i, : m + 1, :n], atol=ATOL, rtol=0)
        assert torch.count_nonzero(attn[i, :, n:]) == 0
        losses.append(summed_loss(model, alone_src, src_lengths[i : i + 1], alone_tgt,
                                  tgt_out[i : i + 1, : m + 1])[0])
    loss, _ = summed_loss(model, src, src_lengths, tgt_in, tgt_out)
    torch.testing.assert_close(loss, torch.stack(losses).sum(), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_loss_ignores_padding(label_smoothing):
    model = make_model("lstm")
    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    loss, num_tokens = summed_loss(model, src, src_lengths, tgt_in, tgt_out, label_smoothing=label_smoothing)
    total, count = torch.tensor(0.0), 0
    for i, m in enumerate(TGT_LENGTHS):
        one, n = summed_loss(
            model, src[i : i + 1, : SRC_LENGTHS[i]], src_lengths[i : i + 1], tgt_in[i : i + 1, : m + 1],
            tgt_out[i : i + 1, : m + 1], label_smoothing=label_smoothing,
        )
        total, count = total + one, count + n
    assert num_tokens == count == sum(TGT_LENGTHS) + len(TGT_LENGTHS)
    torch.testing.assert_close(loss, total, atol=1e-4, rtol=1e-5)
    if label_smoothing == 0.0:  # the summed negative log-likelihood of the real target tokens
        log_probs = torch.log_softmax(model(src, src_lengths, tgt_in)[0], dim=-1)
        real = tgt_out.ne(PAD_ID)
        nll = -log_probs.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)[real].sum()
        torch.testing.assert_close(loss, nll, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("rnn_type,bidirectional", RNN_DIRS, ids=RNN_DIRS_IDS)
@pytest.mark.parametrize("input_feeding", [True, False], ids=["feed", "nofeed"])
def test_reference_rnn_model_matches_fused(rnn_type, bidirectional, input_feeding):
    kwargs = dict(encoder_layers=2, decoder_layers=2, input_feeding=input_feeding)
    fused = make_model(rnn_type, bidirectional, rnn_impl="fused", **kwargs)
    reference = make_model(rnn_type, bidirectional, rnn_impl="reference", **kwargs)
    reference.load_state_dict(fused.state_dict())
    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    logits_f, attn_f = fused.decoder(tgt_in, fused.encode(src, src_lengths))
    logits_r, attn_r = reference.decoder(tgt_in, reference.encode(src, src_lengths))
    torch.testing.assert_close(logits_r, logits_f, atol=ATOL, rtol=0)
    torch.testing.assert_close(attn_r, attn_f, atol=ATOL, rtol=0)
    loss_f, _ = summed_loss(fused, src, src_lengths, tgt_in, tgt_out, label_smoothing=0.1)
    loss_r, _ = summed_loss(reference, src, src_lengths, tgt_in, tgt_out, label_smoothing=0.1)
    torch.testing.assert_close(loss_r, loss_f, atol=ATOL, rtol=1e-6)


# ---------------------------------------------------------------------------- tied embeddings
def test_tie_embeddings_shares_the_parameter():
    model = make_model("gru", tie_embeddings=True).train()
    decoder = model.decoder
    assert decoder.output_layer.weight is decoder.embedding.weight
    assert decoder.attn_vector_size == EMB
    untied = make_model("gru", tie_embeddings=False)
    assert model.num_parameters() < untied.num_parameters()
    assert sum(p is decoder.embedding.weight for p in model.parameters()) == 1

    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = decoder.embedding.weight.detach().clone()
    first, count = summed_loss(model, src, src_lengths, tgt_in, tgt_out)
    (first / count).backward()
    assert torch.isfinite(decoder.embedding.weight.grad).all()
    optimizer.step()
    assert decoder.output_layer.weight is decoder.embedding.weight  # still one tensor after the update
    assert not torch.equal(decoder.embedding.weight, before)
    for _ in range(20):
        optimizer.zero_grad()
        loss, count = summed_loss(model, src, src_lengths, tgt_in, tgt_out)
        (loss / count).backward()
        optimizer.step()
    assert loss < first


# ---------------------------------------------------------------------------- scheduled sampling
@pytest.mark.parametrize("input_feeding", [True, False], ids=["feed", "nofeed"])
def test_teacher_forcing_ratio_one_is_the_standard_path(input_feeding):
    model = make_model("lstm", input_feeding=input_feeding)
    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    logits, _ = model(src, src_lengths, tgt_in, teacher_forcing_ratio=1.0)
    torch.testing.assert_close(logits, stepped_logits(model, src, src_lengths, tgt_in), atol=ATOL, rtol=0)
    loss, _ = summed_loss(model, src, src_lengths, tgt_in, tgt_out, teacher_forcing_ratio=1.0)
    torch.testing.assert_close(loss, summed_nll(logits, tgt_out), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("input_feeding", [True, False], ids=["feed", "nofeed"])
def test_teacher_forcing_ratio_below_one(input_feeding):
    model = make_model("gru", input_feeding=input_feeding).train()
    src, src_lengths, tgt_in, tgt_out = random_batch(SRC_LENGTHS, TGT_LENGTHS)
    loss, count = summed_loss(model, src, src_lengths, tgt_in, tgt_out, teacher_forcing_ratio=0.5)
    assert torch.isfinite(loss) and count == sum(TGT_LENGTHS) + len(TGT_LENGTHS)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    # ratio 0: every input after BOS is the model's own previous argmax (free running)
    model.eval()
    logits, _ = model(src, src_lengths, tgt_in, teacher_forcing_ratio=0.0)
    state, memory = model.decoder.start(model.encode(src, src_lengths))
    prev, expected = tgt_in[:, 0], []
    for _ in range(tgt_in.size(1)):
        step_logits, state, _ = model.decoder.step(prev, state, memory)
        expected.append(step_logits)
        prev = step_logits.argmax(-1)
    torch.testing.assert_close(logits, torch.stack(expected, dim=1), atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------- a toy task, learned
def reversal_batch(sequences: list[list[int]]) -> tuple[torch.Tensor, ...]:
    targets = [seq[::-1] for seq in sequences]
    return (
        pad_rows(sequences),
        torch.tensor([len(seq) for seq in sequences]),
        pad_rows([[BOS_ID] + y for y in targets]),
        pad_rows([y + [EOS_ID] for y in targets]),
    )


def reversal_accuracy(cfg: ModelConfig, num_symbols: int, steps: int, longest: int, seed: int = 0) -> float:
    """Train ``cfg`` to reverse 3-``longest`` symbols (Adam 3e-3 annealed linearly, clip 1.0, batches of 64 never
    holding one of 200 held-out inputs); the share of held-out inputs greedy decoding reverses exactly."""
    vocab = FIRST_REAL_ID + num_symbols
    rng = random.Random(seed)

    def sample(n: int) -> list[list[int]]:
        return [[rng.randrange(FIRST_REAL_ID, vocab) for _ in range(rng.randint(3, longest))] for _ in range(n)]

    held_out = sample(200)
    held_out_set = {tuple(seq) for seq in held_out}
    model = build_model(cfg, vocab, vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.train()
    for _ in range(steps):
        batch = reversal_batch([seq for seq in sample(64) if tuple(seq) not in held_out_set])
        loss, num_tokens = summed_loss(model, *batch)
        optimizer.zero_grad()
        (loss / num_tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    model.eval()
    src, src_lengths, _, _ = reversal_batch(held_out)
    hypotheses = run_greedy(model, src, src_lengths, max_len_a=1.0, max_len_b=2)
    accuracy = sum(h.tokens == seq[::-1] for h, seq in zip(hypotheses, held_out)) / len(held_out)
    print(f"reversal: {accuracy:.1%} exact after {steps} steps, {time.perf_counter() - start:.1f} s wall, "
          f"{time.process_time() - cpu_start:.1f} s CPU")
    return accuracy


@pytest.mark.slow
def test_learns_to_reverse_sequences():
    """A small GRU (default decoder: Bahdanau attention, input feeding, linear bridge) learns to reverse 3-10
    symbols; greedy decoding is exact on >= 95% of unseen inputs (100% in practice, ~6 CPU seconds)."""
    cfg = ModelConfig(
        rnn_type="gru", emb_size=32, encoder_hidden_size=32, bidirectional=True, decoder_hidden_size=64,
        attention="bahdanau", input_feeding=True, bridge="bridge", dropout=0.0,
    )
    assert reversal_accuracy(cfg, num_symbols=10, steps=300, longest=10) >= 0.95


# ---------------------------------------------------------------------------- the levers of issue 19 in the whole model
def test_word_dropout_reaches_both_embeddings_in_training_only():
    model = build_model(ModelConfig(emb_size=8, encoder_hidden_size=4, decoder_hidden_size=8, dropout=0.0,
                                    input_feeding=True, word_dropout=0.5), 20, 20)
    src, lengths = torch.randint(4, 20, (4, 6)), torch.full((4,), 6)
    tgt = torch.randint(4, 20, (4, 5))
    model.eval()
    reference = summed_loss(model, src, lengths, tgt, tgt)[0]
    assert torch.equal(summed_loss(model, src, lengths, tgt, tgt)[0], reference)
    model.train()
    torch.manual_seed(5)
    encoded = model.encode(src, lengths).outputs
    assert not torch.allclose(encoded, model.eval().encode(src, lengths).outputs)
    model.train()
    gates = model.decoder.input_gates(tgt)  # zeroed embeddings leave only the bias
    only_bias = torch.isclose(gates, model.decoder.rnn.bias_ih_l0.expand_as(gates)).all(-1)
    assert 0.2 < float(only_bias.float().mean()) < 0.8


@pytest.mark.slow
def test_learns_to_reverse_sequences_with_every_lever_on():
    """A two-layer residual LSTM with layer-normalized decoder cells, 4-head attention and word dropout learns to
    reverse 3-7 symbols; greedy decoding is exact on >= 90% of unseen inputs."""
    torch.manual_seed(0)
    cfg = ModelConfig(rnn_type="lstm", emb_size=32, encoder_hidden_size=32, decoder_hidden_size=64,
                      encoder_layers=2, decoder_layers=2, residual=True, layer_norm=True, attention_heads=4,
                      word_dropout=0.05, dropout=0.0, input_feeding=True)
    assert reversal_accuracy(cfg, num_symbols=8, steps=200, longest=7) >= 0.9
