"""What the fuzz tests share: the example budget, the strategies of odd text, and the fuzz model.

The budget: unset (CI), each property runs the small, fixed number of examples it names (``ci=``), the same examples
every run. ``SEQ2SEQ_FUZZ_EXAMPLES=N`` (a campaign, ``scripts/fuzz_campaign.py``) gives each surface (the Python
API, the command lines, the HTTP service) N examples, split among its properties by their ``share`` (the shares of
a surface add up to at least 1), drawn afresh each run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: examples per surface in a campaign; None = CI's fixed budgets
CAMPAIGN = int(os.environ["SEQ2SEQ_FUZZ_EXAMPLES"]) if os.environ.get("SEQ2SEQ_FUZZ_EXAMPLES") else None
BASE = settings(deadline=None, derandomize=CAMPAIGN is None, suppress_health_check=list(HealthCheck))


def budget(ci: int, share: float) -> settings:
    """Hypothesis settings running ``ci`` examples in CI, ``share`` of the surface's examples in a campaign."""
    return settings(BASE, max_examples=ci if CAMPAIGN is None else max(1, round(CAMPAIGN * share)))


#: decoding limits of the fuzz model: long inputs are still read whole and truncated (to 40 pieces), but every
#: search is short (at most 8 steps) so that thousands of examples stay affordable. Search is tested elsewhere.
FUZZ_DECODE = {"max_src_length": 40, "max_len_a": 0.0, "max_len_b": 8}
#: what str.splitlines() splits on: none of these may appear inside one translation
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def make_fuzz_model(tiny_model_dir: Path, out: Path) -> Path:
    """A copy of the tiny model in ``out/model`` with the short decoding limits of :data:`FUZZ_DECODE`."""
    model_dir = out / "model"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("last", "*.log", "*.png"))
    config = model_dir / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["decode"].update(FUZZ_DECODE)
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return model_dir


# ------------------------------------------------------------------------------------------ odd text
CONTROL = [chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))]
COMBINING = list("\u0300\u0301\u0308\u0327\u0338\u0489\u20dd\u1ab0\u1dc0\ufe20\u0e31\u0bcd\u093f")
EMOJI = ["\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f1e9\U0001f1ea",
         "\u2764\ufe0f", "\U0001faf6", "\U0001f3f3\ufe0f\u200d\U0001f308", "#\ufe0f\u20e3"]
RTL = ["مرحبا بالعالم", "שלום עולם", "سلام", "ܫܠܡܐ", "\u200f", "\u200e", "\u202b", "\u202e", "\u2067", "\u2069", "\u061c"]
WHITESPACE = list(" \t\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000")
ODD = list("\x00\ufeff\ufffe\uffff\ufffd\u200b\u200c\u200d\u2060\ue000\U0010ffff\U000e0001\u00ad\u0000<>&")
WORDS = ["A", "man", "is", "riding", "a", "bike", ".", "Two", "dogs", "play", "in", "the", "snow", ",", "<s>", "</s>",
         "<unk>", "<pad>", "▁", "Käse", "naïve", "ﬁ", "Ⅻ", "①", "ｆｕｌｌ", "\u212b", "Berlin", "42", "3.14",
         "https://x.example/a?b=1", "ann@example.org", "AB-1234"]
LONE_SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
ANY_CHAR = st.characters(exclude_categories=())  # every code point, surrogates included


def fragments(line_breaks: bool) -> st.SearchStrategy[str]:
    """Small pieces of text of every odd kind; without CLI line ends (\\n, \\r) when ``line_breaks`` is False."""
    parts = st.one_of(
        st.sampled_from(WORDS).map(lambda w: w + " "),
        ANY_CHAR,
        LONE_SURROGATES,
        st.sampled_from(CONTROL),
        st.sampled_from(COMBINING),
        st.sampled_from(EMOJI),
        st.sampled_from(RTL),
        st.sampled_from(WHITESPACE),
        st.sampled_from(ODD),
    )
    if not line_breaks:
        parts = parts.map(lambda s: s.replace("\n", " ").replace("\r", " "))
    return parts


def texts(line_breaks: bool = True, long: bool = True) -> st.SearchStrategy[str]:
    """One input: short odd text, whitespace only, or (``long``) a line of 10,000+ characters."""
    short = st.lists(fragments(line_breaks), max_size=25).map("".join)
    whitespace = st.lists(st.sampled_from(WHITESPACE if not line_breaks else WHITESPACE + ["\n", "\r", "\r\n"]),
                          max_size=8).map("".join)
    if not long:
        return st.one_of(short, short, whitespace)
    long_line = st.tuples(st.lists(fragments(line_breaks), min_size=1, max_size=25).map("".join),
                          st.integers(10_000, 14_000)).map(
        lambda unit_length: (unit_length[0] * (unit_length[1] // len(unit_length[0]) + 1))[: unit_length[1]]
    )
    return st.one_of(short, short, whitespace, long_line)
