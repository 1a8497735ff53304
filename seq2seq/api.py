"""Python API: ``Translator.load(model_dir).translate(text_or_lines, beam_size=..., nbest=...)``.

Layers (each usable alone): :func:`translate_ids` (ids in, hypotheses out, batched and sorted by length
internally, results in input order) -> :class:`Translator` (text in, text or :class:`Translation` out).
The command-line tools are thin layers over this module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from seq2seq.config import (
    MAX_BEAM_SIZE,
    MAX_DECODE_BATCH_SIZE,
    Config,
    DecodeConfig,
    apply_overrides,
)
from seq2seq.precision import choose_autocast
from seq2seq.search import Hypothesis, beam_search, greedy_search
from seq2seq.tokenizer import EOS_ID, PAD_ID, Tokenizer

logger = logging.getLogger(__name__)


@dataclass
class Translation:
    """One translation hypothesis of one input.

    Attributes:
        text: detokenized translation.
        tokens: target piece ids (no BOS/EOS).
        score: length-normalized log-probability.
        attention: (len(tokens) + 1, source pieces + 1) weights (rows: target pieces then EOS; columns:
            source pieces then EOS), when asked for.
        src_pieces / tgt_pieces: the pieces that label the attention matrix.
    """

    text: str
    tokens: list[int]
    score: float
    attention: Optional[torch.Tensor] = field(default=None, repr=False)
    src_pieces: list[str] = field(default_factory=list, repr=False)
    tgt_pieces: list[str] = field(default_factory=list, repr=False)


def sentence_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (longest first) in chunks of ``batch_size``, for decoding.

    Every index appears exactly once; results go back to input order by index.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep input order
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def source_ids(pieces: Sequence[int], max_src_length: int) -> list[int]:
    """Piece ids (no EOS) -> the encoder's input: at most ``max_src_length`` pieces, then EOS."""
    return list(pieces[:max_src_length]) + [EOS_ID]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    return device


def pad_batch(sequences: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into (B, S) with PAD_ID; returns (ids, lengths (B,))."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    padded = torch.full((len(sequences), int(lengths.max())), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(sequences):
        padded[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return padded.to(device), lengths.to(device)


def translate_ids(
    model: torch.nn.Module,
    src_ids: Sequence[Sequence[int]],
    decode: DecodeConfig,
    beam_size: int | None = None,
    nbest: int = 1,
    return_attention: bool = False,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> list[list[Hypothesis]]:
    """Decode source id sequences (each ending in EOS) in length-sorted batches; results in input order.

    ``beam_size`` 1 runs greedy search; otherwise beam search with ``decode``'s length penalty etc.
    """
    beam_size = decode.beam_size if beam_size is None else beam_size
    device = torch.device(device)
    results: list[list[Hypothesis]] = [[] for _ in src_ids]
    for indices in sentence_batches([len(s) for s in src_ids], decode.batch_size):
        src, src_lengths = pad_batch([src_ids[i] for i in indices], device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            if beam_size == 1 and nbest == 1:
                hypotheses = [
                    [h]
                    for h in greedy_search(
                        model, src, src_lengths, decode.max_len_a, decode.max_len_b, decode.min_length,
                        decode.no_repeat_ngram, decode.length_penalty, return_attention,
                    )
                ]
            else:
                hypotheses = beam_search(
                    model, src, src_lengths, beam_size, decode.max_len_a, decode.max_len_b, decode.length_penalty,
                    decode.min_length, decode.no_repeat_ngram, nbest, return_attention,
                )
        for index, hyps in zip(indices, hypotheses):
            results[index] = hyps or [Hypothesis(tokens=[], score=float("-inf"))]
    return results


class Translator:
    """A trained model ready to translate text.

    >>> tr = Translator.load("runs/multi30k_en_de")           # doctest: +SKIP
    >>> tr.translate("a man is riding a bike")                 # doctest: +SKIP
    'ein mann fährt fahrrad'
    """

    def __init__(self, cfg: Config, model: torch.nn.Module, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer,
                 device: torch.device) -> None:
        self.cfg = cfg
        self.model = model.eval()
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.device = device
        self.autocast_dtype = choose_autocast(cfg.decode.dtype, device, model, "decode", cfg.data.cache_dir,
                                              cfg.decode.batch_size, cfg.decode.beam_size)

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto", quantize: str | None = None,
             dtype: str | None = None) -> "Translator":
        """Load a model directory (config.yaml, tokenizers, model.safetensors).

        Args:
            device: ``auto`` | ``cpu`` | ``cuda``.
            quantize: ``int8`` for dynamic int8 quantization of linear layers (CPU inference).
            dtype: compute dtype ``auto`` | ``fp32`` | ``tf32`` | ``bf16`` | ``fp16`` (default: the model's
                ``decode.dtype``); ``auto`` times decoding in each candidate once per machine and caches the choice.
        """
        from seq2seq.checkpoint import load_model_dir

        resolved = resolve_device(device)
        cfg, model, src_tok, tgt_tok = load_model_dir(model_dir, resolved)
        if dtype is not None:
            apply_overrides(cfg, [f"decode.dtype={dtype}"])  # ConfigError (a ValueError) lists the choices
        if quantize == "int8":
            cfg.decode.dtype = "fp32"  # int8 kernels replace the GEMMs; no autocast on top
            if resolved.type != "cpu":
                raise ValueError("quantize='int8' runs on the CPU only; use device='cpu'")
            import warnings

            quantize_dynamic = getattr(getattr(torch.ao, "quantization", None), "quantize_dynamic", None)
            if quantize_dynamic is None:
                raise ValueError(f"quantize='int8' needs torch.ao.quantization.quantize_dynamic, which torch "
                                 f"{torch.__version__} does not have; translate without --quantize")
            with warnings.catch_warnings():  # torch marks its eager-mode quantization as deprecated
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        elif quantize not in (None, "none"):
            raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
        return cls(cfg, model, src_tok, tgt_tok, resolved)

    def encode_sources(self, lines: Sequence[str], numbers: Sequence[int] | None = None) -> list[list[int]]:
        """Source lines -> piece ids + EOS, truncated to ``decode.max_src_length`` pieces with a warning.

        ``numbers`` name the lines in that warning (default 1, 2, ...).
        """
        limit = self.cfg.decode.max_src_length
        numbers = range(1, len(lines) + 1) if numbers is None else numbers
        encoded = []
        for line_number, line, ids in zip(numbers, lines, self.src_tokenizer.encode(list(lines))):
            if len(ids) > limit:
                logger.warning(
                    "input %d (%r...) has %d source pieces; translating only the first %d (decode.max_src_length)",
                    line_number, line[:30], len(ids), limit,
                )
            encoded.append(source_ids(ids, limit))
        return encoded

    def translate(
        self,
        text: Union[str, Sequence[str]],
        beam_size: int | None = None,
        nbest: int = 1,
        return_scores: bool = False,
        return_attention: bool = False,
        batch_size: int | None = None,
    ):
        """Translate one string or a list of strings.

        Returns:
            with no options: ``str`` for a string, ``list[str]`` for a list (same order, same count).
            with ``return_scores`` / ``return_attention`` / ``nbest > 1``: per input a :class:`Translation`
            (``nbest == 1``) or a list of ``nbest`` of them, best first.
        Empty or whitespace-only inputs translate to ``""`` (score 0) without running the model.
        """
        single = isinstance(text, str)
        lines = [text] if single else list(text)
        for i, line in enumerate(lines):
            if not isinstance(line, str):
                raise TypeError(f"translate() takes str or a list of str; item {i} is {type(line).__name__}")
        beam_size = self.cfg.decode.beam_size if beam_size is None else int(beam_size)
        if not 1 <= beam_size <= MAX_BEAM_SIZE:
            raise ValueError(f"beam_size must be in [1, {MAX_BEAM_SIZE}], got {beam_size}")
        if not 1 <= nbest <= max(beam_size, 1):
            raise ValueError(f"nbest must be in [1, beam_size={beam_size}], got {nbest}")
        if batch_size is not None and not 1 <= batch_size <= MAX_DECODE_BATCH_SIZE:
            raise ValueError(f"batch_size must be in [1, {MAX_DECODE_BATCH_SIZE}], got {batch_size}")
        decode = self.cfg.decode if batch_size is None else DecodeConfig(**{**vars(self.cfg.decode), "batch_size": batch_size})
        rich = return_scores or return_attention or nbest > 1

        nonempty = [i for i, line in enumerate(lines) if line.strip()]
        translations: list[list[Translation]] = [[Translation(text="", tokens=[], score=0.0)] for _ in lines]
        if nonempty:
            src_ids = self.encode_sources([lines[i] for i in nonempty], [i + 1 for i in nonempty])
            hypotheses = translate_ids(
                self.model, src_ids, decode, beam_size, nbest, return_attention, self.device, self.autocast_dtype
            )
            texts = self.tgt_tokenizer.decode([h.tokens for hyps in hypotheses for h in hyps])
            position = 0
            for index, ids, hyps in zip(nonempty, src_ids, hypotheses):
                entry = []
                for hyp in hyps:
                    translation = Translation(text=texts[position], tokens=hyp.tokens, score=hyp.score)
                    position += 1
                    if return_attention:
                        translation.attention = hyp.attention
                        translation.src_pieces = [self.src_tokenizer.id_to_piece(i) for i in ids]
                        translation.tgt_pieces = [self.tgt_tokenizer.id_to_piece(i) for i in hyp.tokens] + ["</s>"]
                    entry.append(translation)
                translations[index] = entry

        if rich:
            out = [entry[0] if nbest == 1 else entry for entry in translations]
        else:
            out = [entry[0].text for entry in translations]
        return out[0] if single else out
