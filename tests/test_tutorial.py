"""docs/tutorial.md runs: its python blocks are executed in order as one session (on the tiny corpus, a tiny model
and a few training steps), and every ``output`` block must be exactly what the python block before it printed. After
training the numbers and words depend on the run, so those blocks show what a default run printed in an
``example-output`` block: there the test's run must print the same lines, each starting with the same label (the
text before its first colon, digit, parenthesis or quote)."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from conftest import REPO_ROOT

TUTORIAL = REPO_ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```(python|output)\n(.*?)^```$", re.S | re.M)
EXAMPLE = re.compile(r"^```python\n(.*?)^```\n\n```example-output\n(.*?)^```$", re.S | re.M)


def tutorial_blocks(text: str) -> list[tuple[str, str | None]]:
    """[(python code, the output block right after it or None)] in document order."""
    blocks, pending = [], None
    for match in BLOCK.finditer(text):
        kind, body = match.groups()
        if kind == "python":
            if pending is not None:
                blocks.append((pending, None))
            pending = body
        else:
            assert pending is not None, f"an output block with no python block before it:\n{body}"
            blocks.append((pending, body))
            pending = None
    if pending is not None:
        blocks.append((pending, None))
    return blocks


def line_labels(printed: str) -> list[str]:
    """Each line's label: its text before the first colon, digit, parenthesis or quote; a run of equal labels counts
    once (a short run's beam may stop after fewer steps)."""
    labels = [re.match(r"[^:\d('\"]*", line).group() for line in printed.splitlines()]
    return [label for number, label in enumerate(labels) if number == 0 or labels[number - 1] != label]


def example_outputs(text: str) -> dict[str, str]:
    """{python block: the example-output block right after it}."""
    return dict(EXAMPLE.findall(text))


def test_line_labels_see_a_changed_print():
    example = "step 0: ▁Ein (-1.20)\ngreedy: ▁Ein ▁Mann (-0.5)\n['Ein Mann.']\n"
    assert line_labels("step 3: ▁ (-9.1)\ngreedy:  (-3.0)\n['']\n") == line_labels(example)
    assert line_labels("step 3: ▁ (-9.1)\nbest:  (-3.0)\n['']\n") != line_labels(example)


def test_the_block_parser_pairs_outputs():
    text = "```python\na\n```\n\n```output\n1\n```\n```python\nb\n```\n```bash\nx\n```\n```python\nc\n```\n"
    assert tutorial_blocks(text) == [("a\n", "1\n"), ("b\n", None), ("c\n", None)]


def test_tutorial_runs_and_prints_what_it_shows(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("TUTORIAL_DATA", str(tiny_corpus))
    monkeypatch.setenv("TUTORIAL_OUT", str(tmp_path / "tutorial"))
    monkeypatch.setenv("TUTORIAL_STEPS", "30")
    monkeypatch.setenv("TUTORIAL_OVERRIDES", " ".join([
        f"data.cache_dir={tmp_path / 'cache'}", "tokenizer.vocab_size=400", "model.emb_size=32",
        "model.encoder_hidden_size=32", "model.decoder_hidden_size=48", "train.max_tokens=1200", "train.lr=0.003",
        "train.valid_every=30", "train.log_every=10", "train.valid_bleu_sentences=20", "train.threads=1",
        "train.scheduler=plateau", "train.warmup_steps=0", "train.ema_decay=0", "decode.max_len_b=5"]))
    text = TUTORIAL.read_text(encoding="utf-8")
    blocks, examples = tutorial_blocks(text), example_outputs(text)
    assert len(blocks) >= 10 and len(examples) >= 3
    namespace: dict = {"__name__": "tutorial"}
    for number, (code, expected) in enumerate(blocks, 1):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"{TUTORIAL}:block{number}", "exec"), namespace)
        if expected is not None:
            assert printed.getvalue() == expected, f"block {number} of {TUTORIAL} printed:\n{printed.getvalue()}"
        if code in examples:
            assert line_labels(printed.getvalue()) == line_labels(examples[code]), (
                f"block {number} of {TUTORIAL} printed other lines than its example-output block:\n{printed.getvalue()}")
    assert (tmp_path / "tutorial" / "attention.png").stat().st_size > 1000
