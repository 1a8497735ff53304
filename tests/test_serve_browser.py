"""The service's page in a real browser: headless Chromium (Debian's ``chromium``) loads ``/`` from a running
``python -m seq2seq.serve``, types a sentence, clicks Translate, and the translation, the n-best list, the attention
heatmap and the beam steps appear, equal to what the API answers. Skipped, saying why, where no Chromium is found,
except under ``CI=true`` (``.ci/run`` installs Debian's ``chromium``), where it fails.

``SEQ2SEQ_SCREENSHOT=path.png`` also saves a screenshot of the page."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from support.chromium import Chromium, find_chromium
from support.serving import http_json, start_server

from seq2seq.checkpoint import WEIGHTS_FILE, load_weights, save_weights
from seq2seq.tokenizer import TGT_TOKENIZER_FILE, Tokenizer

SENTENCE = "Two dogs play in the snow."


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        reason = "no Chromium found (install Debian's `chromium` package or set SEQ2SEQ_CHROMIUM=/path/to/chrome)"
        if os.environ.get("CI", "").lower() == "true":  # .ci/run installs it: CI must test the page, not skip it
            pytest.fail(f"{reason}; CI=true needs it", pytrace=False)
        pytest.skip(reason)
    with Chromium(binary) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def server(browser, request):
    pytest.importorskip("uvicorn", reason='the service needs the serve extra: pip install -e ".[serve]"')
    tiny_model_dir = request.getfixturevalue("tiny_model_dir")  # only once a browser is there: no training in vain
    process, url = start_server(with_text(tiny_model_dir, request.getfixturevalue("tmp_path_factory")))
    yield url
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)


def with_text(model_dir: Path, tmp_path_factory) -> Path:
    """A copy of the tiny model whose bare word boundary "▁" is pushed down: the tiny model, barely trained, would
    otherwise spell most outputs as runs of "▁" (empty text), and the page must show words."""
    copy = tmp_path_factory.mktemp("browser_model") / "model"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("last", "*.log", "*.png"))
    weights = load_weights(copy / WEIGHTS_FILE)
    space = Tokenizer.load(copy / TGT_TOKENIZER_FILE)._sp.piece_to_id("\u2581")
    weights["decoder.output_layer.bias"][space] -= 100.0
    save_weights(weights, copy / WEIGHTS_FILE)
    return copy


def read_page(browser: Chromium) -> dict:
    return browser.evaluate("""(() => ({
        translation: document.getElementById('translation').textContent,
        greedy: document.getElementById('greedy').textContent,
        nbest: [...document.querySelectorAll('#nbest-list tr')].slice(1).map(r => r.cells[2].textContent),
        columns: [...document.querySelectorAll('#heatmap thead th')].slice(1).map(c => c.textContent),
        rows: [...document.querySelectorAll('#heatmap tbody tr')].map(r => r.cells[0].textContent),
        cells: document.querySelectorAll('#heatmap tbody td').length,
        steps: document.querySelectorAll('#beam-steps .step').length,
        finished: document.querySelectorAll('#beam-steps .finished').length,
        heights: ['translation', 'nbest-list', 'heatmap', 'beam-steps'].map(id => document.getElementById(id).offsetHeight),
        ids: [...document.querySelectorAll('[id]')].map(e => e.id),
        error: document.getElementById('error').textContent,
    }))()""")


def test_the_page_translates_and_shows_attention_and_the_beam(browser, server):
    browser.navigate(server + "/")
    browser.wait_for("document.getElementById('langs').textContent.includes('en')")  # /info has been read
    browser.type_into("#source", SENTENCE)
    browser.type_into("#beam-size", "2")  # the tiny test model's beam-3 translations are mostly empty
    browser.type_into("#nbest-size", "2")
    browser.click("#translate")
    state = browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
    page = read_page(browser)
    assert state == "done", page["error"]
    assert len(set(page["ids"])) == len(page["ids"])  # one element per id: the script draws where it should
    assert all(height > 0 for height in page["heights"]), page["heights"]  # drawn and visible, not only in the DOM

    expected = http_json(server + "/translate", {"text": SENTENCE, "beam_size": 2, "nbest": 2, "return_scores": True,
                                                 "return_attention": True, "return_beam": True})["translations"][0]
    assert page["translation"] == expected["text"] != ""
    assert page["nbest"] == [h["text"] for h in expected["nbest"]]
    best = expected["nbest"][0]  # with an n-best list, each hypothesis carries its own attention
    assert page["columns"] == expected["src_pieces"] and page["rows"] == best["tgt_pieces"]
    assert page["cells"] == len(expected["src_pieces"]) * len(best["tgt_pieces"])
    assert page["steps"] == len(expected["beam"]) > 0
    assert page["finished"] == sum(len(step["finished"]) for step in expected["beam"]) > 0
    assert page["greedy"].startswith("greedy search (beam 1): ")
    if os.environ.get("SEQ2SEQ_SCREENSHOT"):
        browser.screenshot(os.environ["SEQ2SEQ_SCREENSHOT"])
