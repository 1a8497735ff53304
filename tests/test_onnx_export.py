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
                         "input_feeding": True, **request.param})
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

    from seq2seq.decoding_model import DecodingModel, StepDecoder

    model, onnx_model = exported
    assert isinstance(onnx_model, DecodingModel) and isinstance(onnx_model.decoder, StepDecoder)
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
    # protected spans and a glossary term go through the onnxruntime attention alike: kept, and the same text
    line = "Zoë has 12 dogs in Kraków."
    for beam_size in (1, 3):
        ours, theirs = (t.generate([line], beam_size=beam_size, glossary=[("dogs", "Hunde")])[0][0]
                        for t in (onnx_translator, torch_translator))
        assert ours.text == theirs.text and ours.missing == [] and {"Zoë", "12", "Kraków"} <= {s.text for s in ours.kept}


# ---------------------------------------------------------------------------- every architecture the config accepts
#: between them every value of every architecture key (rnn_type, attention, heads 1/2, input_feeding, layer_norm,
#: residual, attention_layer, bridge, tie_embeddings, bidirectional, 1-3 layers), multi-head Bahdanau included
#: what each of ARCHITECTURES changes: input feeding on unless it says otherwise (the default before issue 36)
ARCHITECTURE_BASE = {"emb_size": 8, "encoder_hidden_size": 6, "decoder_hidden_size": 10, "dropout": 0.2,
                     "input_feeding": True}
ARCHITECTURES = {
    "lstm-bahdanau-2heads-ln-residual-bottom": dict(rnn_type="lstm", attention_heads=2, layer_norm=True,
                                                    residual=True, attention_layer="bottom", encoder_layers=2,
                                                    decoder_layers=3),
    "gru-dot-2heads-last-bottom-no-feeding": dict(rnn_type="gru", attention="luong_dot", attention_heads=2,
                                                  bridge="last", encoder_hidden_size=5, decoder_layers=2,
                                                  attention_layer="bottom", input_feeding=False),
    "lstm-general-2heads-uni-tied-zero-ln": dict(rnn_type="lstm", attention="luong_general", attention_heads=2,
                                                 bidirectional=False, tie_embeddings=True, emb_size=10,
                                                 bridge="zero", layer_norm=True),
    "gru-bahdanau-2heads-residual-no-feeding": dict(rnn_type="gru", attention_heads=2, residual=True,
                                                    encoder_layers=3, decoder_layers=2, input_feeding=False,
                                                    word_dropout=0.1),
}


def test_the_architectures_cover_every_choice_of_the_config():
    import typing

    from seq2seq.config import ModelConfig as Model

    hints = typing.get_type_hints(Model)
    built = [{**ARCHITECTURE_BASE, **arch} for arch in ARCHITECTURES.values()]
    covered = {key: {arch.get(key, getattr(Model(), key)) for arch in built}
               for key in ("rnn_type", "attention", "attention_layer", "bridge")}
    for key, values in covered.items():
        assert values == set(typing.get_args(hints[key])), key
    for key in ("input_feeding", "layer_norm", "residual", "tie_embeddings", "bidirectional"):
        assert {arch.get(key, getattr(Model(), key)) for arch in built} == {False, True}, key


@pytest.mark.parametrize("overrides", ARCHITECTURES.values(), ids=ARCHITECTURES.keys())
def test_every_architecture_exports_and_equals_torch(overrides, tmp_path):
    """Multi-head Bahdanau (block-diagonal energies) used to fail to export with a traceback; each model here
    exports, and its encoder and steps equal torch's (random weights, so every parameter matters)."""
    from seq2seq.onnx_export import export_onnx
    from seq2seq.onnx_runtime import load_onnx_model

    torch.manual_seed(4)
    cfg = ModelConfig(**{**ARCHITECTURE_BASE, **overrides})
    model = build_model(cfg, VOCAB, VOCAB).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.5)
    export_onnx(model, tmp_path / "onnx")
    onnx_model = load_onnx_model(tmp_path / "onnx", cfg.rnn_type, threads=1)
    src, src_lengths = random_src([3, 7, 1], vocab=VOCAB)
    with torch.no_grad():
        state, memory = model.decoder.start(model.encode(src, src_lengths))
    onnx_state, onnx_memory = onnx_model.decoder.start(onnx_model.encode(src, src_lengths))
    tokens = torch.full((3,), 1)
    for _ in range(3):
        with torch.no_grad():
            logits, state, _ = model.decoder.step(tokens, state, memory)
        onnx_logits, onnx_state, _ = onnx_model.decoder.step(tokens, onnx_state, onnx_memory)
        torch.testing.assert_close(onnx_logits, logits, atol=1e-4, rtol=0)
        tokens = logits.argmax(-1)


def test_a_failed_export_leaves_nothing_half_written(monkeypatch, tmp_path):
    """The step graph failing after the encoder graph was written: one ValueError naming the cause, no onnx/
    directory; a previous export stays whole."""
    from seq2seq.onnx_export import StepGraph, export_onnx

    model = random_model(vocab=VOCAB)

    def broken(self, *tensors):
        raise RuntimeError("an operator this opset cannot express")

    monkeypatch.setattr(StepGraph, "forward", broken)
    with pytest.raises(ValueError, match="cannot export this model to ONNX.*an operator this opset cannot express"):
        export_onnx(model, tmp_path / "onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.undo()
    export_onnx(model, tmp_path / "onnx")
    before = {p.name: p.read_bytes() for p in (tmp_path / "onnx").iterdir()}
    monkeypatch.setattr(StepGraph, "forward", broken)
    with pytest.raises(ValueError):
        export_onnx(model, tmp_path / "onnx")
    assert {p.name: p.read_bytes() for p in (tmp_path / "onnx").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


# ---------------------------------------------------------------------------- the other search modes on onnxruntime
def test_sampling_prefix_constraints_scoring_and_ensembles_unchanged(exported, tmp_path):
    """Sampling (seeded), a forced prefix (greedy and beam), constrained beam search, forced scoring and an ensemble
    of two exported models decode through onnxruntime as through torch."""
    from support.search_calls import run_beam, run_greedy, run_sampling

    from seq2seq.decoding.ensemble import Ensemble
    from seq2seq.decoding.forced import score_targets
    from seq2seq.decoding.sampling import Sampling
    from seq2seq.onnx_export import export_onnx
    from seq2seq.onnx_runtime import load_onnx_model

    model, onnx_model = exported
    src, src_lengths = random_src([5, 8, 2], vocab=VOCAB)

    def same(ours, theirs):
        flat = (lambda hyps: [h for row in hyps for h in (row if isinstance(row, list) else [row])])
        assert [h.tokens for h in flat(ours)] == [h.tokens for h in flat(theirs)]
        assert [h.score for h in flat(ours)] == pytest.approx([h.score for h in flat(theirs)], abs=1e-4)

    sampled = [run_sampling(m, src, src_lengths, Sampling(temperature=1.3, top_k=6, seed=5).sampler("cpu"), nbest=3)
               for m in (onnx_model, model)]
    same(*sampled)
    prefix = torch.tensor([[5, 6], [7, 0], [0, 0]])
    same(run_greedy(onnx_model, src, src_lengths, prefix=prefix), run_greedy(model, src, src_lengths, prefix=prefix))
    same(run_beam(onnx_model, src, src_lengths, beam_size=3, prefix=prefix),
         run_beam(model, src, src_lengths, beam_size=3, prefix=prefix))
    constraints = [[[9]], [[4, 5]], [[6], [8]]]
    same(run_beam(onnx_model, src, src_lengths, beam_size=4, nbest=2, constraints=constraints),
         run_beam(model, src, src_lengths, beam_size=4, nbest=2, constraints=constraints))
    tgt, tgt_lengths = torch.tensor([[5, 6, 7], [4, 0, 0], [8, 9, 0]]), torch.tensor([3, 1, 2])
    for ours, theirs in zip(score_targets(onnx_model, src, src_lengths, tgt, tgt_lengths),
                            score_targets(model, src, src_lengths, tgt, tgt_lengths)):
        assert ours.tokens == theirs.tokens and ours.score == pytest.approx(theirs.score, abs=1e-4)
    second = random_model(vocab=VOCAB, rnn_type=model.decoder.rnn_type)
    export_onnx(second, tmp_path / "second")
    onnx_second = load_onnx_model(tmp_path / "second", second.decoder.rnn_type, threads=1)
    same(run_beam(Ensemble([onnx_model, onnx_second]), src, src_lengths, beam_size=3, nbest=2),
         run_beam(Ensemble([model, second]), src, src_lengths, beam_size=3, nbest=2))


# ---------------------------------------------------------------------------- graphs tied to their weights
def test_graphs_of_other_weights_or_damaged_graphs_are_refused(tiny_model_dir, tmp_path):
    """After the weights change, --backend onnx used to translate as the old weights did: now the digest recorded
    at export is checked at load; a damaged or truncated graph is refused with the same advice."""
    import shutil

    from safetensors.torch import load_file, save_file

    from seq2seq.onnx_export import main as onnx_export_main
    from seq2seq.translator import Translator

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("last"))
    assert onnx_export_main(["--model", str(model_dir)]) == 0
    Translator.load(model_dir, device="cpu", backend="onnx")  # fresh graphs load
    weights = load_file(model_dir / "model.safetensors")
    name = "decoder.output_layer.bias"
    weights[name] = weights[name] + 0.5  # "retrained"
    save_file(weights, model_dir / "model.safetensors")
    with pytest.raises(ValueError, match="exported from other weights.*seq2seq.onnx_export"):
        Translator.load(model_dir, device="cpu", backend="onnx")
    assert onnx_export_main(["--model", str(model_dir)]) == 0
    Translator.load(model_dir, device="cpu", backend="onnx")
    step = model_dir / "onnx" / "decoder_step.onnx"
    step.write_bytes(step.read_bytes()[: step.stat().st_size // 2])
    with pytest.raises(ValueError, match="decoder_step.onnx is not the graph that was exported"):
        Translator.load(model_dir, device="cpu", backend="onnx")
    # a graph damaged and its digest rewritten to match: onnxruntime's own error, as one ValueError
    import json

    from seq2seq.onnx_export import file_digest

    record = json.loads((model_dir / "onnx" / "exported_from.json").read_text())
    record["decoder_step.onnx"] = file_digest(step)
    (model_dir / "onnx" / "exported_from.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="onnxruntime cannot load .*decoder_step.onnx.*seq2seq.onnx_export"):
        Translator.load(model_dir, device="cpu", backend="onnx")
