"""The service's page in a real browser: headless Chromium (Debian's ``chromium``) loads ``/`` from a running
``python -m seq2seq.serve``, types a sentence, clicks Translate, and the translation, the n-best list, the attention
heatmap and the beam steps appear, equal to what the API answers. Skipped, saying why, where no Chromium is found.

``SEQ2SEQ_SCREENSHOT=path.png`` also saves a screenshot of the page."""

from __future__ import annotations

import os
import signal

import pytest
from support.chromium import Chromium, find_chromium
from support.serving import http_json, start_server

SENTENCE = "Two dogs play in the snow."


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium found (install Debian's `chromium` package or set SEQ2SEQ_CHROMIUM=/path/to/chrome)")
    with Chromium(binary) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    pytest.importorskip("uvicorn", reason='the service needs the serve extra: pip install -e ".[serve]"')
    process, url = start_server(tiny_model_dir)
    yield url
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)


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
    assert page["columns"] == expected["src_pieces"] and page["rows"] == expected["tgt_pieces"]
    assert page["cells"] == len(expected["src_pieces"]) * len(expected["tgt_pieces"])
    assert page["steps"] == len(expected["beam"]) > 0
    assert page["finished"] == sum(len(step["finished"]) for step in expected["beam"]) > 0
    assert page["greedy"].startswith("greedy search (beam 1): ")
    if os.environ.get("SEQ2SEQ_SCREENSHOT"):
        browser.screenshot(os.environ["SEQ2SEQ_SCREENSHOT"])
