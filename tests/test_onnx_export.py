"""ONNX export: the exported encoder and decoder step equal torch's within 1e-5 at several source lengths and batch
sizes, and every search mode decodes the same through onnxruntime (seq2seq/onnx_export.py, seq2seq/onnx_runtime.py)."""

from __future__ import annotations

import pytest
import torch

from seq2seq.config import ModelConfig
from seq2seq.model import build_model
from support.tiny_models import random_model, random_src

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

#: fp32 in both; the differences are summation order in the GEMMs (measured about 1e-7)
ATOL = 1e-5
VOCAB = 14


@pytest.fixture(scope="module", params=[
    dict(rnn_type="lstm", encoder_layers=2, decoder_layers=2),
    dict(rnn_type="gru", attention="luong_general", input_feeding=False),
    dict(rnn_type="gru", bridge="zero", tie_embeddings=True, emb_size=10),
], ids=["lstm-2layer-bahdanau", "gru-luong-no-feeding", "gru-feeding-tied"])
def exported(request, tmp_path_factory):
    from seq2seq.onnx_export import export_onnx
    from seq2seq.onnx_runtime import load_onnx_model

    torch.manual_seed(3)
    cfg = ModelConfig(**{"emb_size": 8, "encoder_hidden_size": 6, "decoder_hidden_size": 10, "dropout": 0.3,
                         **request.param})
    model = build_model(cfg, VOCAB, VOCAB).eval()  # with dropout: a model left in training mode decodes differently
    with torch.no_grad():
        model.decoder.output_layer.weight.mul_(3.0)  # peaked distributions: search decisions are not near-ties
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(model, out)
    assert not any(m.training for m in model.modules()), "the export left the model in training mode"
    return model, load_onnx_model(out, model.decoder.rnn_type, threads=1)


@pytest.mark.parametrize("lengths", [[1], [9], [4, 2, 7], [3, 11, 1, 6, 8, 2]])
def test_encoder_and_steps_equal_torch(exported, lengths):
    model, onnx_model = exported
    src, src_lengths = random_src(lengths, vocab=VOCAB)
    with torch.no_grad():
        state, memory = model.decoder.start(model.encode(src, src_lengths))
    onnx_state, onnx_memory = onnx_model.decoder.start(onnx_model.encode(src, src_lengths))
    for name in ("values", "keys", "pad_mask"):
        torch.testing.assert_close(getattr(onnx_memory, name), getattr(memory, name), atol=ATOL, rtol=0)
    tokens = torch.full((len(lengths),), 1)
    for _ in range(4):  # several steps, each fed the torch state and the ONNX state it produced
        with torch.no_grad():
            logits, state, attn = model.decoder.step(tokens, state, memory)
        onnx_logits, onnx_state, onnx_attn = onnx_model.decoder.step(tokens, onnx_state, onnx_memory)
        torch.testing.assert_close(onnx_logits, logits, atol=ATOL, rtol=0)
        torch.testing.assert_close(onnx_attn, attn, atol=ATOL, rtol=0)
        torch.testing.assert_close(onnx_state.hidden, state.hidden, atol=ATOL, rtol=0)
        if state.cell is not None:
            torch.testing.assert_close(onnx_state.cell, state.cell, atol=ATOL, rtol=0)
        torch.testing.assert_close(onnx_state.attn_vector, state.attn_vector, atol=ATOL, rtol=0)
        tokens = logits.argmax(-1)


def test_search_modes_unchanged(exported):
    from support.search_calls import run_beam, run_greedy

    model, onnx_model = exported
    src, src_lengths = random_src([5, 8, 2, 6], vocab=VOCAB)
    for search in (lambda m: run_greedy(m, src, src_lengths),
                   lambda m: run_beam(m, src, src_lengths, beam_size=5, nbest=3),
                   lambda m: run_beam(m, src, src_lengths, beam_size=3, no_repeat_ngram=2, min_length=2)):
        ours, theirs = search(onnx_model), search(model)
        flat = (lambda hyps: [h for row in hyps for h in (row if isinstance(row, list) else [row])])
        assert [h.tokens for h in flat(ours)] == [h.tokens for h in flat(theirs)]
        assert [h.score for h in flat(ours)] == pytest.approx([h.score for h in flat(theirs)], abs=1e-4)


def test_reference_cells_are_refused(tmp_path):
    from seq2seq.onnx_export import export_onnx

    with pytest.raises(ValueError, match="rnn_impl: fused"):
        export_onnx(random_model(vocab=VOCAB, rnn_impl="reference"), tmp_path)


def test_translator_onnx_backend_translates_as_torch(tiny_model_dir, tiny_corpus, tmp_path):
    import shutil

    from seq2seq.translator import Translator
    from seq2seq.onnx_export import main as onnx_export_main

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("last"))
    with pytest.raises(ValueError, match="seq2seq.onnx_export"):
        Translator.load(model_dir, device="cpu", backend="onnx")
    assert onnx_export_main(["--model", str(model_dir)]) == 0  # python -m seq2seq.onnx_export: into MODEL/onnx
    lines = (tiny_corpus / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()[:40]
    torch_translator = Translator.load(model_dir, device="cpu")
    onnx_translator = Translator.load(model_dir, device="cpu", backend="onnx", threads=1)
    torch_out = torch_translator.translate(lines, beam_size=3)
    onnx_out = onnx_translator.translate(lines, beam_size=3)
    assert onnx_out == torch_out
    # the confidence's forced pass steps the onnxruntime graphs: the same piece probabilities and confidence
    for ours, theirs in zip(onnx_translator.generate(lines[:8]), torch_translator.generate(lines[:8])):
        assert ours[0].piece_probs == pytest.approx(theirs[0].piece_probs, abs=1e-4)
        assert ours[0].confidence == pytest.approx(theirs[0].confidence, abs=1e-4)
