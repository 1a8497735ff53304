"""The runtime without torch (seq2seq/decoding/numpy_search.py, numpy_beams.py, numpy_rules.py,
seq2seq/onnx_graphs.py): greedy and beam search in numpy over the onnxruntime graphs return what the torch searches
return over the same graphs, and translating with ``--backend onnx`` imports no torch module at all."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT as ROOT
from conftest import SUBPROCESS_ENV
from support.search_calls import run_beam, run_greedy
from support.tiny_models import random_model, random_src

from seq2seq.decoding import numpy_search
from seq2seq.decoding.numpy_rules import max_output_lengths
from seq2seq.decoding.options import DecodeOptions

pytest.importorskip("onnxruntime")

VOCAB = 14


@pytest.fixture(scope="module", params=[dict(rnn_type="lstm", encoder_layers=2, decoder_layers=2),
                                        dict(rnn_type="gru", attention="luong_general", input_feeding=False)],
                ids=["lstm-2layer", "gru-luong-no-feeding"])
def graphs(request, tmp_path_factory):
    """(torch model over the graphs, numpy graphs) of a small random model with peaked distributions."""
    from seq2seq.onnx_export import export_onnx
    from seq2seq.onnx_graphs import load_onnx_graphs
    from seq2seq.onnx_runtime import OnnxSeq2Seq

    torch.manual_seed(3)
    model = random_model(vocab=VOCAB, **request.param)
    with torch.no_grad():
        model.decoder.output_layer.weight.mul_(3.0)  # search decisions are not near-ties
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(model, out)
    loaded = load_onnx_graphs(out, model.decoder.rnn_type, threads=1)
    return OnnxSeq2Seq(loaded), loaded


def flat(hyps):
    return [h for row in hyps for h in (row if isinstance(row, list) else [row])]


def assert_same(ours, theirs, attention=False):
    ours, theirs = flat(ours), flat(theirs)
    assert [h.tokens for h in ours] == [h.tokens for h in theirs]
    assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], abs=1e-5)
    if attention:
        for mine, reference in zip(ours, theirs):
            np.testing.assert_allclose(mine.attention, reference.attention.numpy(), atol=1e-6)


@pytest.mark.parametrize("settings", [
    dict(beam_size=1),
    dict(beam_size=1, min_length=4, no_repeat_ngram=1, return_attention=True),
    dict(beam_size=5, nbest=3, return_attention=True),
    dict(beam_size=3, no_repeat_ngram=2, min_length=2, length_penalty=0.6),
    dict(beam_size=4, nbest=2, max_len_a=0.5, max_len_b=2),
])
def test_greedy_and_beam_equal_the_torch_searches_on_the_same_graphs(graphs, settings):
    """Tokens, scores and attention of each mode (greedy search's reported score with the length penalty too) equal
    torch's over the very same onnxruntime sessions, on a batch whose sentences end at different steps."""
    torch_graphs, numpy_graphs = graphs
    src, src_lengths = random_src([5, 8, 2, 6, 1], vocab=VOCAB)
    prefixes = [[5, 6], [], [7], [], []]
    options = DecodeOptions(**settings)
    for prefix_rows in (None, prefixes):
        ours = numpy_search.translate_ids([numpy_graphs], [row[:n].tolist() for row, n in zip(src, src_lengths)],
                                          options, prefixes=prefix_rows)
        prefix = None
        if prefix_rows:
            prefix = torch.zeros(len(prefix_rows), 2, dtype=torch.long)
            for i, row in enumerate(prefix_rows):
                prefix[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        run = run_greedy if options.beam_size == 1 else run_beam
        theirs = run(torch_graphs, src, src_lengths, prefix=prefix, **{"length_penalty": 1.0, **settings})
        if options.beam_size == 1:
            theirs = [[h] for h in theirs]
        assert_same(ours, theirs, attention=options.return_attention)
        if prefix_rows:
            assert all(h.tokens[: len(p)] == p for hyps, p in zip(ours, prefix_rows) for h in hyps)


def test_an_ensemble_equals_the_torch_ensemble(graphs, tmp_path):
    from seq2seq.decoding.ensemble import Ensemble
    from seq2seq.onnx_export import export_onnx
    from seq2seq.onnx_graphs import load_onnx_graphs
    from seq2seq.onnx_runtime import OnnxSeq2Seq

    torch_graphs, numpy_graphs = graphs
    second = random_model(vocab=VOCAB, rnn_type=numpy_graphs.rnn_type)
    export_onnx(second, tmp_path)
    second_graphs = load_onnx_graphs(tmp_path, second.decoder.rnn_type, threads=1)
    src, src_lengths = random_src([4, 7, 3], vocab=VOCAB)
    ids = [row[:n].tolist() for row, n in zip(src, src_lengths)]
    for settings in (dict(beam_size=1), dict(beam_size=3, nbest=2)):
        ours = numpy_search.translate_ids([numpy_graphs, second_graphs], ids, DecodeOptions(**settings))
        ensemble = Ensemble([torch_graphs, OnnxSeq2Seq(second_graphs)])
        theirs = (run_greedy(ensemble, src, src_lengths, length_penalty=1.0) if settings["beam_size"] == 1
                  else run_beam(ensemble, src, src_lengths, **settings))
        assert_same(ours, theirs if settings["beam_size"] > 1 else [[h] for h in theirs])


def test_length_limits_round_as_torch():
    """``a * len + b`` in float32 as torch computes it: at a = 0.7 and 90 source pieces (or 2.3 and 50) float32
    and float64 truncate to different limits."""
    from seq2seq.decoding.logits import max_output_lengths as torch_limits

    lengths = np.arange(0, 300)
    for a, b in ((1.2, 5), (1.5, 10), (0.7, 0), (1.1, 3), (2.0, -5), (2.3, 0)):
        assert max_output_lengths(lengths, a, b).tolist() == torch_limits(torch.from_numpy(lengths), a, b).tolist()


def test_a_trained_model_translates_as_on_the_torch_onnx_path(onnx_model_dir, tiny_corpus):
    """60 test sentences, greedy and beam 5: the numpy searches give the pieces (so the texts) the torch searches
    give over the same graphs (the ``--backend onnx`` path before the runtime without torch)."""
    from seq2seq.decoding.driver import translate_ids
    from seq2seq.translator import Translator

    translator = Translator.load(onnx_model_dir, backend="onnx", threads=1)
    assert translator.runtime
    torch_graphs, _ = translator.torch_models("the comparison")
    lines = (tiny_corpus / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()[:60]
    src_ids = translator.encode_sources(lines)
    for beam_size in (1, 5):
        # the 50-step model ends at once unless made to go on: at least 6 pieces, so that the texts differ
        options = translator.decode_options(beam_size=beam_size).replace(min_length=6)
        ours = numpy_search.translate_ids(translator.models, src_ids, options)
        theirs = translate_ids(torch_graphs, src_ids, options)
        tokens = [[h[0].tokens for h in hyps] for hyps in (ours, theirs)]
        assert tokens[0] == tokens[1] and len({tuple(t) for t in tokens[0]}) > 10  # (the texts then too)


# ---------------------------------------------------------------------------- no torch on the runtime's path
NO_TORCH = textwrap.dedent("""
    import sys

    class NoTorch:  # any import of torch (or of a module of it) fails here
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"the runtime imported {name}")

    sys.meta_path.insert(0, NoTorch())
    from seq2seq.translate import main
    from seq2seq.translator import Translator

    model = sys.argv[1]
    status = main(["--model", model, "--backend", "onnx", "--beam-size", "1", "a dog runs in the park ."])
    status += main(["--model", model, "--backend", "onnx", "--beam-size", "3", "--nbest", "2", "--json",
                    "--alignments", "Zoe has 12 dogs in Krakow ."])
    translator = Translator.load(model, backend="onnx", threads=1)
    print(translator.translate(["two men play football .", "a woman reads a book ."], beam_size=3))
    print(translator.generate(["a dog ."])[0][0].confidence is not None)
    if "serve" in sys.argv:  # the service: a request through the app, confidences and all
        from fastapi.testclient import TestClient

        from seq2seq.serving.app import create_app
        from seq2seq.serving.schema import Limits

        with TestClient(create_app(translator, model, Limits(), batch_wait_ms=1.0)) as client:
            reply = client.post("/translate", json={"text": "two dogs play .", "beam_size": 2})
            print(reply.status_code, sorted(reply.json()["translations"][0]))
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print("torch modules:", loaded)
    sys.exit(status or bool(loaded))
""")


def test_translating_with_the_onnx_backend_imports_no_torch(onnx_model_dir):
    """The command line (greedy; beam with n-best, --json confidences and --alignments), the Python API and the
    service (when FastAPI is installed), with an import hook that fails any import of torch, and no torch module
    loaded at the end; protected spans are restored through the attention on the way."""
    serve = ["serve"] if importlib.util.find_spec("fastapi") and importlib.util.find_spec("httpx") else []
    result = subprocess.run([sys.executable, "-c", NO_TORCH, str(onnx_model_dir), *serve], capture_output=True,
                            text=True, env=SUBPROCESS_ENV, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[-1] == "torch modules: []"
    assert '"confidence"' in lines[1] and '"alignment"' in lines[1] and lines[-2 - bool(serve)] == "True"
    if serve:
        assert lines[-2].startswith("200 ") and "confidence" in lines[-2]


def test_modes_the_numpy_searches_do_not_serve_say_so_and_run_on_torch(onnx_model_dir, caplog):
    """Sampling runs the torch sampler over the same graphs, with one warning naming it."""
    from seq2seq.decoding.sampling import Sampling
    from seq2seq.translator import Translator

    translator = Translator.load(onnx_model_dir, backend="onnx", threads=1)
    with caplog.at_level("WARNING"):
        out = translator.generate(["a dog runs ."], sampling=Sampling(seed=1), nbest=2)
    assert len(out) == 1 and len(out[0]) == 2
    assert "sampling runs the torch search over the onnxruntime graphs" in caplog.text


def test_the_torch_translation_path_does_not_import_torch_onnx(tiny_model_dir):
    """torch.onnx (and torch._dynamo with it) cost ~1.6 s of a cold start when the attention asked whether it was
    being exported; a plain torch translation imports neither."""
    code = ("import sys; from seq2seq.translator import Translator; "
            f"print(Translator.load({str(tiny_model_dir)!r}, device='cpu').translate('a dog runs .', beam_size=2)); "
            "print(sorted(m for m in sys.modules if m.startswith(('torch.onnx', 'torch._dynamo'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=SUBPROCESS_ENV,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "[]"


# ---------------------------------------------------------------------------- the scripts that measure the runtime
def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_size_counts_the_runtime_without_torch():
    """scripts/install_size.py: the runtime's closure holds onnxruntime and what it requires (numpy, protobuf) and no
    torch; the full install's holds torch; sizes are the installed files' bytes."""
    install_size = load_script("install_size")
    runtime, _ = install_size.closure(install_size.RUNTIME)
    full, _ = install_size.closure(install_size.FULL)
    assert {"onnxruntime", "numpy", "protobuf", "sentencepiece", "pyyaml"} <= runtime and "torch" not in runtime
    assert "torch" in full and "sentencepiece" in full
    from importlib import metadata

    files = [f.locate() for f in metadata.distribution("sentencepiece").files]
    by_hand = sum(path.stat().st_size for path in files if path.is_file())
    assert install_size.size_of("sentencepiece") == by_hand > 0


def test_cold_start_times_whole_processes(onnx_model_dir, tmp_path):
    """scripts/cold_start.py on the onnx backend: one run's figures, and the process never imported torch."""
    out = tmp_path / "cold.json"
    result = subprocess.run([sys.executable, "scripts/cold_start.py", "--model", str(onnx_model_dir), "--runs", "1",
                             "--backends", "onnx", "--json", str(out)], capture_output=True, text=True,
                            env=SUBPROCESS_ENV, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())["onnx"]
    assert figures["torch imported"] is False
    assert 0 < figures["first translation"]["median"] < figures["whole process"]["median"]
