"""The Python API fuzzed call by call: ``Translator.translate`` / ``generate`` / ``score`` with any Unicode, empty and
huge inputs, every option in and out of range, and arguments of the wrong type.

A call either returns a well-formed result (one entry per input, in order, no line break inside a text, finite
scores that are log-probabilities) or raises ``TypeError`` / ``ValueError`` with a message; a call whose
arguments are all of the right type and in range returns. Never another exception, never a crash. The budget:
:mod:`support.fuzzing` (CI: 150 examples; a campaign: 0.93 of the API surface's).
"""

from __future__ import annotations

import math
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from support.fuzzing import LINE_BREAKS, budget, make_fuzz_model, texts

from seq2seq.decoding.forced import TargetScore
from seq2seq.decoding.sampling import Sampling
from seq2seq.translator import Translation, Translator

#: values of the wrong type for any argument
ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.binary(max_size=6),
                       st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                max_size=2), st.just(object()))


@st.composite
def arguments(draw, kind) -> tuple:
    """(value, valid): a well-typed, in-range value of ``kind`` (valid=True), or a wrong one."""
    if draw(st.integers(0, 9)) == 0:  # one argument in ten of the wrong type
        return draw(ODD_VALUES), False
    return draw(kind), True


def a_text():
    """Mostly short odd text; one in ten a line of 10,000+ characters (test_fuzz.py has more of those)."""
    return st.integers(0, 9).flatmap(lambda n: texts(long=n == 0))


def text_lists():
    return st.lists(a_text(), max_size=4)


SHORT = texts(long=False)
GLOSSARIES = st.none() | st.dictionaries(SHORT, SHORT, max_size=3) | st.lists(
    st.lists(SHORT, min_size=1, max_size=2), max_size=3)


@st.composite
def calls(draw) -> tuple[str, tuple, dict, bool]:
    """(method, args, kwargs, valid): one call of the API."""
    method = draw(st.sampled_from(["translate", "translate", "generate", "score"]))
    valid = True

    def arg(kind):
        nonlocal valid
        value, ok = draw(arguments(kind))
        valid = valid and ok
        return value

    if method == "score":
        single = draw(st.booleans())
        if single:
            args = (arg(a_text()), arg(a_text()))
        else:
            sources = arg(text_lists())
            count = len(sources) if isinstance(sources, list) else draw(st.integers(0, 3))
            args = (sources, arg(st.lists(SHORT, min_size=count, max_size=count)))
        kwargs = {"batch_size": arg(st.none() | st.integers(1, 4)), "return_attention": arg(st.booleans())}
        return method, args, kwargs, valid
    inputs = arg(a_text() | text_lists()) if method == "translate" else arg(text_lists())
    beam = arg(st.none() | st.integers(1, 4))
    kwargs = {"beam_size": beam, "batch_size": arg(st.none() | st.integers(1, 4)),
              "return_attention": arg(st.booleans()), "preserve": arg(st.booleans()),
              "glossary": arg(GLOSSARIES), "do_not_translate": arg(st.lists(SHORT, max_size=2))}
    glossary, keep = kwargs["glossary"], kwargs["do_not_translate"]
    terms = list(glossary.items()) if isinstance(glossary, dict) else glossary if isinstance(glossary, list) else []
    terms = [*terms, *([t] for t in (keep if isinstance(keep, list) else []))]
    if any(isinstance(term, str) and not term.split() for entry in terms if isinstance(entry, (list, tuple))
           for term in entry):
        valid = False  # a blank glossary or do-not-translate term is refused (a ValueError naming it)
    sampling = draw(st.booleans()) and draw(st.integers(0, 4)) == 0
    if sampling:
        kwargs["sampling"] = Sampling(temperature=draw(st.floats(0.1, 3)), top_k=draw(st.integers(0, 5)),
                                      top_p=draw(st.floats(0.05, 1)), seed=draw(st.integers(0, 2**31)))
        kwargs["nbest"] = arg(st.integers(1, 3))
    else:
        beam_value = beam if isinstance(beam, int) and not isinstance(beam, bool) and beam >= 1 else 3
        kwargs["nbest"] = arg(st.integers(1, min(beam_value, 3)))
    if draw(st.integers(0, 4)) == 0:  # a prefix or constraints: may be refused (too long, no pieces): a ValueError
        kwargs[draw(st.sampled_from(["prefix", "constraints"]))] = draw(SHORT | st.lists(SHORT, min_size=1, max_size=2))
        valid = False
    if method == "translate":  # texts only: the rich flags belong to generate() and are refused with a TypeError
        for flag in ("return_attention", "nbest"):
            del kwargs[flag]
        if draw(st.integers(0, 9)) == 0:
            kwargs[draw(st.sampled_from(["nbest", "return_scores", "return_attention"]))] = draw(st.integers(1, 2))
            valid = False
    if draw(st.integers(0, 19)) == 0:  # out of range: zero or negative sizes
        kwargs[draw(st.sampled_from(["beam_size", "nbest", "batch_size"]))] = draw(st.integers(-2, 0))
        valid = False
    return method, (inputs,), kwargs, valid


@pytest.fixture(scope="module")
def fuzz_translator(tiny_model_dir, tmp_path_factory) -> Translator:
    return Translator.load(make_fuzz_model(tiny_model_dir, tmp_path_factory.mktemp("fuzz_calls")), device="cpu")


def check_text(text) -> None:
    assert isinstance(text, str) and not any(c in LINE_BREAKS for c in text), repr(text[:80])
    text.encode("utf-8")  # strict: no lone surrogate in an output (it could not be printed or sent)


def check_translation(entry: Translation, source: str) -> None:
    check_text(entry.text)
    for span in entry.kept + entry.missing:
        (span.text + (span.target or "")).encode("utf-8")
    assert math.isfinite(entry.score) and entry.score <= 1e-6
    if not source.strip():
        assert (entry.text, entry.score) == ("", 0.0)


def check_score(result: TargetScore) -> None:
    assert isinstance(result, TargetScore)
    assert len(result.token_log_probs) == len(result.tokens) + 1 == len(result.pieces)
    assert all(math.isfinite(p) and p <= 1e-6 for p in result.token_log_probs)
    assert result.log_prob == pytest.approx(sum(result.token_log_probs), abs=1e-3)


def check_result(method: str, args: tuple, kwargs: dict, result) -> None:
    if method == "score":
        sources = args[0]
        if isinstance(sources, str):
            return check_score(result)
        assert isinstance(result, list) and len(result) == len(sources)
        for entry in result:
            check_score(entry)
        return
    inputs = args[0]
    lines = [inputs] if isinstance(inputs, str) else list(inputs)
    nbest = kwargs.get("nbest", 1)
    if method == "generate":
        entries = result
    else:
        entries = [result] if isinstance(inputs, str) else result
        assert isinstance(entries, list) and len(entries) == len(lines)
        for text in entries:
            check_text(text)
        return
    assert isinstance(entries, list) and len(entries) == len(lines)
    for line, hypotheses in zip(lines, entries):
        assert 1 <= len(hypotheses) <= nbest
        for hypothesis in hypotheses:
            check_translation(hypothesis, line)


@budget(ci=150, share=0.93)
@given(call=calls())
def test_api_any_call_returns_a_well_formed_result_or_a_type_or_value_error(fuzz_translator, call):
    method, args, kwargs, valid = call
    try:
        result = getattr(fuzz_translator, method)(*args, **kwargs)
    except (TypeError, ValueError) as err:
        event("outcome", f"{method} {type(err).__name__}")  # counted by scripts/fuzz_campaign.py
        over_limit = method == "score" and "target pieces; the limit is" in str(err)  # the documented bound
        assert not valid or over_limit, f"a valid call raised {type(err).__name__}: {err}"
        assert str(err), type(err)
        return
    event("outcome", f"{method} returned")
    check_result(method, args, kwargs, result)


def test_the_fuzzed_calls_reach_every_method_and_both_outcomes(fuzz_translator):
    """The strategy is not vacuous: valid calls of each method, and wrong types refused with TypeError."""
    assert fuzz_translator.generate(["", "A man."], beam_size=2, nbest=2)[0][0].text == ""
    check_result("score", (["A dog.", ""], ["Ein Hund.", ""]), {}, fuzz_translator.score(["A dog.", ""],
                                                                                          ["Ein Hund.", ""]))
    for bad in ([b"bytes"], "one string", None):
        with pytest.raises(TypeError):
            fuzz_translator.generate(bad)
    with pytest.raises(TypeError):
        fuzz_translator.score("a", ["b"])
    # found by the campaign: items of the wrong type reached the tokenizer (AttributeError: 'int' has no 'encode')
    for sources, targets in ((b"\x00", b"\x00"), (["a", 5], ["b", "c"]), (["a"], [None])):
        with pytest.raises(TypeError, match="score\\(\\) takes two strings or two lists of strings; "):
            fuzz_translator.score(sources, targets)


@pytest.mark.parametrize("line", [":\udced\udca0\udc80", "Berlin \ud800 42", "\udcff\udcfe AB-1234 bike"])
def test_lone_surrogates_never_reach_an_output(fuzz_translator, line):
    """Found by the campaign (a command-line argument with undecodable bytes): a protected span copied the input's
    lone surrogates into the translation, which then could not be written as UTF-8 (a traceback from the CLI, a 500
    from the service). Inputs and glossary terms are now read with lone surrogates as U+FFFD, as the tokenizer
    reads them."""
    glossary = {"bike": "Fahr\udcffrad", "Berl\ud800in": "x"}
    for entry in fuzz_translator.generate([line], beam_size=2, return_attention=True, glossary=glossary,
                                           do_not_translate=["AB-\udc80"])[0]:
        check_translation(entry, line)
