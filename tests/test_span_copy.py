"""Protected spans and glossary terms through the real tiny model: verbatim under beam search, greedy search and
sampling, reported when they cannot be honoured, and accepted by the command line and the service."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from support.cli import run

from seq2seq.decoding.sampling import Sampling
from seq2seq.translator import Translator

LINE = "Zoë has 12 dogs in Kraków."
SPANS = ["Zoë", "12", "Kraków"]
SEARCHES = {"greedy": dict(beam_size=1), "beam": dict(beam_size=3),
            "sampling": dict(sampling=Sampling(temperature=1.0, seed=3), nbest=3)}


@pytest.fixture(scope="module")
def translator(tiny_model_dir) -> Translator:
    return Translator.load(tiny_model_dir, device="cpu")


@pytest.mark.parametrize("search", SEARCHES)
def test_names_and_numbers_come_out_verbatim_in_every_search(translator, search):
    for hypothesis in translator.generate([LINE], **SEARCHES[search])[0]:
        assert all(span in hypothesis.text for span in SPANS), hypothesis.text
        assert [s.text for s in hypothesis.kept] == SPANS and hypothesis.missing == []
    # without the copy the 50-step model keeps none of them, and nothing is listed
    for hypothesis in translator.generate([LINE], preserve=False, **SEARCHES[search])[0]:
        assert not any(span in hypothesis.text for span in SPANS) and hypothesis.kept == hypothesis.missing == []


def test_spans_as_constraints_of_beam_search(translator):
    translator.spans_as_constraints = True
    try:
        best = translator.generate([LINE], beam_size=3, return_attention=True)[0][0]
    finally:
        translator.spans_as_constraints = False
    assert all(span in best.text for span in SPANS) and best.attention is not None


@pytest.mark.parametrize("search", SEARCHES)
def test_glossary_terms_appear_in_every_search(translator, search):
    line = "A man is riding a bike with Acme."
    for hypothesis in translator.generate([line], glossary={"bike": "Fahrrad"}, do_not_translate=["acme"],
                                          preserve=False, **SEARCHES[search])[0]:
        assert "Fahrrad" in hypothesis.text and "Acme" in hypothesis.text, hypothesis.text
        assert [(s.text, s.target) for s in hypothesis.kept] == [("bike", "Fahrrad"), ("Acme", "Acme")]
    plain = translator.generate([line], beam_size=3, preserve=False)[0][0]
    assert "Fahrrad" not in plain.text and plain.kept == plain.missing == []


def test_a_term_past_the_pieces_read_is_reported_missing(tiny_model_dir):
    translator = Translator.load(tiny_model_dir, device="cpu")
    translator.cfg.decode.max_src_length = 4
    line = "A man is riding a red bike next to Zoë."
    for beam_size in (1, 3):
        best = translator.generate([line], beam_size=beam_size, glossary=[("bike", "Fahrrad")])[0][0]
        assert "Fahrrad" not in best.text and "Zoë" not in best.text
        assert [(s.text, s.kind) for s in best.missing] == [("bike", "glossary"), ("Zoë", "name")]


def test_an_ensemble_restores_through_its_mean_attention(tiny_model_dir):
    ensemble = Translator.load([tiny_model_dir, tiny_model_dir], device="cpu")
    for beam_size in (1, 3):
        best = ensemble.generate([LINE], beam_size=beam_size)[0][0]
        assert all(span in best.text for span in SPANS) and best.missing == []


def test_prefix_and_scoring_keep_working(translator):
    best = translator.generate([LINE], beam_size=3, prefix="Ein Hund")[0][0]
    assert best.text.startswith("Ein Hund") and all(span in best.text for span in SPANS)
    assert translator.score(LINE, "Zoë hat 12 Hunde.").pieces[-1] == "</s>"


# ---------------------------------------------------------------------------- command line and service
@pytest.fixture(scope="module")
def short_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model reading at most 4 source pieces (a term past them cannot be honoured)."""
    out = tmp_path_factory.mktemp("short") / "model"
    shutil.copytree(tiny_model_dir, out)
    cfg = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    cfg["decode"]["max_src_length"] = 4
    (out / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return out


def test_translate_glossary_file_json_and_warning(short_model_dir, tmp_path):
    glossary = tmp_path / "terms.tsv"
    glossary.write_text("# terms\nman\tMensch\nbike\tFahrrad\n", encoding="utf-8")
    result = run("seq2seq.translate", "--model", str(short_model_dir), "--glossary", str(glossary), "--json",
                 "--beam-size", "2", "A man is riding a red bike.")
    assert result.returncode == 0, result.stderr[-2000:]
    entry = json.loads(result.stdout)["translations"][0]
    assert "Mensch" in entry["text"] and [s["target"] for s in entry["kept"]] == ["Mensch"]
    assert [s["target"] for s in entry["missing"]] == ["Fahrrad"]
    assert "warning: glossary term 'bike' -> 'Fahrrad' is not in the translation" in result.stderr
    glossary.write_text("man\tMensch\nbike\tFahr\trad\n", encoding="utf-8")
    bad = run("seq2seq.translate", "--model", str(short_model_dir), "--glossary", str(glossary), "a man")
    assert bad.returncode == 2 and f"{glossary}:2:" in bad.stderr and "Traceback" not in bad.stderr


def test_evaluate_takes_a_glossary(tiny_model_dir, tmp_path):
    (tmp_path / "src.en").write_text("A man rides a bike.\nA dog.\n", encoding="utf-8")
    (tmp_path / "ref.de").write_text("Ein Mann fährt Fahrrad.\nEin Hund.\n", encoding="utf-8")
    (tmp_path / "terms.tsv").write_text("bike\tFahrrad\n", encoding="utf-8")
    result = run("seq2seq.evaluate", "--model", str(tiny_model_dir), "--src", str(tmp_path / "src.en"), "--ref",
                 str(tmp_path / "ref.de"), "--glossary", str(tmp_path / "terms.tsv"), "--no-progress",
                 "--out", str(tmp_path / "out.de"), "--beam-size", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Fahrrad" in (tmp_path / "out.de").read_text(encoding="utf-8").splitlines()[0]


def test_service_takes_a_glossary_and_bounds_it(translator, tiny_model_dir):
    pytest.importorskip("fastapi", reason='the service needs the serve extra: pip install -e ".[serve]"')
    from fastapi.testclient import TestClient

    from seq2seq.serving.app import create_app
    from seq2seq.serving.schema import Limits

    limits = Limits(max_chars=60, max_glossary_terms=2)
    with TestClient(create_app(translator, tiny_model_dir, limits, batch_wait_ms=1.0)) as client:
        reply = client.post("/translate", json={"text": ["A man rides a bike.", "Zoë runs."], "beam_size": 2,
                                                "glossary": {"bike": "Fahrrad"}, "do_not_translate": ["man"]})
        assert reply.status_code == 200, reply.text
        first, second = reply.json()["translations"]
        assert "Fahrrad" in first["text"] and "man" in first["text"] and first["missing"] == []
        assert "Zoë" in second["text"] and [s["kind"] for s in second["kept"]] == ["name"]
        off = client.post("/translate", json={"text": "Zoë runs.", "preserve": False}).json()["translations"][0]
        assert "kept" not in off and "Zoë" not in off["text"]
        too_many = client.post("/translate", json={"text": "a", "glossary": [["a", "b"], ["c"], ["d", "e"]]})
        assert too_many.status_code == 413 and "--max-glossary-terms" in too_many.json()["error"]
        empty = client.post("/translate", json={"text": "a", "glossary": {"bike": " "}})
        assert empty.status_code == 422 and "empty target term" in empty.json()["error"]
        long = client.post("/translate", json={"text": "a", "do_not_translate": ["x" * 61]})
        assert long.status_code == 413 and "--max-chars" in long.json()["error"]
