"""The decoding arguments translate, evaluate, score and serve share, declared once, and their checks.

    group = add_decoding_arguments(parser, batch_size=True, beam_size=True)   # --device --dtype --threads ...
    args = parser.parse_args(argv)
    check_decoding_arguments(parser, args)                                     # exit 2 naming the flag

As fairseq's ``add_generation_args``: one definition of ``--device``, ``--dtype``, ``--threads``, ``--batch-size``,
``--beam-size``, ``--nbest`` and ``--quantize``, with one wording each. The ranges are the config's and the Python
API's (:data:`seq2seq.config.DECODE_RANGES`; the n-best rule through :func:`seq2seq.decoding.options.check_nbest`).
"""

from __future__ import annotations

import argparse

from seq2seq.config import DECODE_RANGES, DTYPES, MAX_BEAM_SIZE, in_decode_range
from seq2seq.decoding.options import check_nbest
DEVICES = ["auto", "cpu", "cuda"]


def add_decoding_arguments(parser: argparse.ArgumentParser, *, batch_size: bool = True, beam_size: bool = True,
                           nbest: bool = False, quantize: bool = False, backend: bool = False) -> argparse._ArgumentGroup:
    """Add the shared decoding flags (``--device``, ``--dtype``, ``--threads`` always; the others when asked)."""
    group = parser.add_argument_group("decoding")
    group.add_argument("--device", default="auto", choices=DEVICES)
    group.add_argument("--dtype", choices=DTYPES, default=None,
                       help="compute dtype (default: the model's decode.dtype; auto = the faster on this machine, "
                            "measured once and cached)")
    group.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, all cores)")
    if beam_size:
        group.add_argument("--beam-size", type=int, default=None,
                           help="beam size (1 = greedy; default: the model's config)")
    if nbest:
        group.add_argument("--nbest", type=int, default=1,
                           help="print this many hypotheses per input: score<TAB>text (samples with --sampling)")
    if batch_size:
        group.add_argument("--batch-size", type=int, default=None, help="sentences per batch")
    if quantize:
        group.add_argument("--quantize", choices=["none", "int8"], default="none",
                           help="dynamic int8 quantization of the linear layers (CPU inference)")
    if backend:
        group.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                           help="onnx: run MODEL/onnx/ (written by python -m seq2seq.onnx_export) in onnxruntime, CPU "
                                "fp32, without importing torch (docs/onnx.md)")
    return group


def check_decoding_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``parser.error`` (exit 2) naming the first shared decoding flag out of range.

    ``--nbest`` is checked against ``--beam-size`` when that is given (and against the most samples with
    ``--sampling``); :func:`check_nbest_for_model` checks it again once the model's beam size is known.
    """
    beam_size = getattr(args, "beam_size", None)
    _check_range(parser, "beam_size", beam_size)
    if hasattr(args, "nbest"):
        check_nbest_for_model(parser, args, beam_size if beam_size is not None else MAX_BEAM_SIZE)
    _check_range(parser, "batch_size", getattr(args, "batch_size", None))
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")


def _check_range(parser: argparse.ArgumentParser, name: str, value: int | None) -> None:
    """``parser.error`` naming the flag of decode setting ``name`` unless ``value`` (None: not given) is in its
    range (:data:`seq2seq.config.DECODE_RANGES`)."""
    if value is not None and not in_decode_range(name, value):
        low, high = DECODE_RANGES[name]
        parser.error(f"--{name.replace('_', '-')} must be >= {low} and <= {high}, got {value}")


def check_nbest_for_model(parser: argparse.ArgumentParser, args: argparse.Namespace, beam_size: int) -> None:
    """``parser.error`` unless ``--nbest`` fits ``beam_size`` (or the most samples with ``--sampling``)."""
    try:
        check_nbest(args.nbest, beam_size, sampling=bool(getattr(args, "sampling", False)))
    except ValueError as err:
        parser.error(f"--{err}")


def add_preservation_arguments(parser: argparse.ArgumentParser, preserve: bool = True) -> argparse._ArgumentGroup:
    """Add ``--glossary FILE`` (translate, evaluate, serve) and, with ``preserve``, ``--no-preserve`` (translate,
    evaluate; the service's requests have a field): see docs/decoding.md."""
    group = parser.add_argument_group("what is carried over verbatim (docs/preservation.md)")
    group.add_argument("--glossary", metavar="FILE",
                       help="source term<TAB>target term per line (one term alone: keep it untranslated; # comments); "
                            "terms match whole words, case-insensitive, longest first")
    if preserve:
        group.add_argument("--no-preserve", dest="preserve", action="store_false",
                           help="do not carry names, numbers, URLs, e-mail addresses, codes and rare characters "
                                "over verbatim (the glossary still applies)")
    return group


def load_glossary_argument(args: argparse.Namespace):
    """The :class:`~seq2seq.glossary.Glossary` of ``--glossary`` (empty without it); raises GlossaryError (a
    ValueError naming FILE:LINE) for a bad file."""
    from seq2seq.glossary import Glossary

    return Glossary.load(args.glossary) if args.glossary else Glossary()
