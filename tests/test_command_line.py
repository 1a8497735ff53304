"""The decoding arguments declared once (seq2seq/command_line.py): translate, evaluate, score and serve take the
same --device / --dtype / --threads (and --batch-size / --beam-size where they decode in batches or search), and
refuse the same bad values with the same message, before any model is loaded."""

from __future__ import annotations

import argparse

import pytest

from seq2seq.command_line import DTYPES, add_decoding_arguments, check_decoding_arguments


def tool_mains():
    from seq2seq.evaluate import main as evaluate
    from seq2seq.score import main as score
    from seq2seq.translate import main as translate

    mains = {"translate": (translate, ["x"]), "evaluate": (evaluate, ["--ref", "r", "--src", "s"]),
             "score": (score, ["--src", "s", "--tgt", "t"])}
    try:
        from seq2seq.serve import main as serve
    except ImportError:  # no serve extra
        return mains
    return {**mains, "serve": (serve, [])}


@pytest.mark.parametrize("flags,message", [(["--threads", "0"], "--threads must be >= 1"),
                                           (["--dtype", "fp64"], "invalid choice: 'fp64'"),
                                           (["--device", "tpu"], "invalid choice: 'tpu'")])
def test_every_tool_refuses_the_same_bad_values(flags, message, capsys):
    for name, (main, rest) in tool_mains().items():
        with pytest.raises(SystemExit) as exit_info:
            main(["--model", "nowhere", *flags, *rest])
        assert exit_info.value.code == 2, name
        assert message in capsys.readouterr().err, name


def test_the_group_checks_beam_batch_and_nbest(capsys):
    parser = argparse.ArgumentParser()
    add_decoding_arguments(parser, batch_size=True, beam_size=True, nbest=True)
    parser.add_argument("--sampling", action="store_true")
    assert set(parser.parse_args([]).__dict__) == {"device", "dtype", "threads", "beam_size", "nbest", "batch_size",
                                                   "sampling"}
    assert parser._option_string_actions["--dtype"].choices == DTYPES
    check_decoding_arguments(parser, parser.parse_args(["--beam-size", "4", "--nbest", "4"]))
    check_decoding_arguments(parser, parser.parse_args(["--sampling", "--nbest", "100"]))
    for flags, words in ((["--beam-size", "101"], ["--beam-size", "<= 100"]),
                         (["--beam-size", "2", "--nbest", "3"], ["--nbest", "beam size"]),
                         (["--sampling", "--nbest", "101"], ["--nbest", "100"]),
                         (["--batch-size", "0"], ["--batch-size", ">= 1"])):
        with pytest.raises(SystemExit):
            check_decoding_arguments(parser, parser.parse_args(flags))
        err = capsys.readouterr().err
        assert all(word in err for word in words), err


@pytest.mark.parametrize("name, flag, highest", [("beam_size", "--beam-size", 100),
                                                 ("batch_size", "--batch-size", 4096)])
def test_config_python_api_and_flags_draw_the_same_line(name, flag, highest, capsys):
    """One range per decode setting (written here by hand: [1, 100] beams, [1, 4096] sentences per batch): the
    config check, the Python API's check and the flag check accept its ends and refuse one past either end."""
    from seq2seq.config import Config, ConfigError
    from seq2seq.decoding import options

    parser = argparse.ArgumentParser()
    add_decoding_arguments(parser, batch_size=True, beam_size=True)
    api_check = {"beam_size": options.check_beam_size, "batch_size": options.check_batch_size}[name]
    for value, allowed in ((0, False), (1, True), (highest, True), (highest + 1, False)):
        cfg = Config()
        setattr(cfg.decode, name, value)
        if name == "beam_size":
            cfg.decode.nbest = 1
        for check, error in ((cfg.validate, ConfigError), (lambda: api_check(value), ValueError),
                             (lambda: check_decoding_arguments(parser, parser.parse_args([flag, str(value)])),
                              SystemExit)):
            if allowed:
                check()
            else:
                with pytest.raises(error):
                    check()
    capsys.readouterr()
