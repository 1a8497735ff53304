"""Python API: ``Translator.load(model_dir).translate(text_or_lines)`` and ``.generate(lines, nbest=...)``.

Layers (each usable alone): :func:`seq2seq.decoding.driver.translate_ids` / :func:`~seq2seq.decoding.driver.score_ids`
(ids in, hypotheses or scores out, batched and sorted by length internally, results in input order) ->
:meth:`Translator.generate` (texts in, per input its n-best list of :class:`Translation` out) ->
:meth:`Translator.translate` (text in, text out); :meth:`Translator.score` for given translations. ``Translator.load([A, B])`` loads an
ensemble. The command-line tools are thin layers over this module.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch

from seq2seq.config import Config, DataConfig
from seq2seq.decoding.driver import score_ids, source_ids, translate_ids
from seq2seq.decoding.forced import TargetScore
from seq2seq.decoding.hypothesis import Hypothesis
from seq2seq.decoding.options import DecodeOptions, check_batch_size, check_beam_size, check_nbest
from seq2seq.decoding.sampling import Sampling
from seq2seq.decoding.search import decoding_work
from seq2seq.glossary import Glossary, GlossaryInput
from seq2seq.protected_spans import NOUNS_CAPITALIZED, SourceWords, Span
from seq2seq.decoding.span_copy import carry_spans, constraint_words, spans_of_inputs
from seq2seq.backends import load_decoding_models
from seq2seq.calibration import Calibration, load_calibration
from seq2seq.decoding.confidence import FEATURE_NAMES, SourcePieceStats
from seq2seq.hub import resolve_model_dir
from seq2seq.sentence_confidence import add_confidence
from seq2seq.dtype_auto import choose_autocast
from seq2seq.tokenizer import Tokenizer

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
        piece_probs: the model's probability of each output piece, then of EOS (an ensemble's: the exponent of its
            members' mean log-probability, what its search ranks by); empty when not computed.
        confidence: 0-1, an estimate of the translation's sentence chrF / 100 when ``confidence_calibrated``
            (the model directory's ``confidence.json``, see docs/confidence.md), else the geometric mean of
            ``piece_probs``; None for an empty input or when not computed.
        low_confidence: the confidence is below the calibration's threshold: unlikely to be right.
        confidence_features: the signals the confidence is computed from (by name).
        A restored translation (protected spans or glossary terms put in after the search) keeps the search's
        ``tokens``, ``score`` and ``attention``; only ``text`` has the spans.
        kept / missing: the input's protected spans and glossary terms (:class:`~seq2seq.protected_spans.Span`)
            that are verbatim in ``text``, and those that are not (reported, never silently dropped).
    """

    text: str
    tokens: list[int]
    score: float
    attention: Optional[torch.Tensor] = field(default=None, repr=False)
    src_pieces: list[str] = field(default_factory=list, repr=False)
    tgt_pieces: list[str] = field(default_factory=list, repr=False)
    piece_probs: list[float] = field(default_factory=list, repr=False)
    confidence: Optional[float] = None
    confidence_calibrated: bool = False
    low_confidence: bool = False
    confidence_features: dict[str, float] = field(default_factory=dict, repr=False)
    kept: list[Span] = field(default_factory=list, repr=False)
    missing: list[Span] = field(default_factory=list, repr=False)


def _per_input(value, count: int, name: str) -> list:
    """``value`` for every input (a str, or a list of str for constraints), or one entry per input."""
    if value is None:
        return [None] * count
    if isinstance(value, str) or (name == "constraints" and value and all(isinstance(v, str) for v in value)):
        return [value] * count
    value = list(value)
    if len(value) != count:
        raise ValueError(f"{name}: give one value for all inputs or one per input ({count}), got {len(value)}")
    return value


class Translator:
    """A trained model (or an ensemble of models sharing tokenizers) ready to translate text.

    >>> tr = Translator.load("runs/multi30k_en_de")           # doctest: +SKIP
    >>> tr.translate("a man is riding a bike")                 # doctest: +SKIP
    'ein mann fährt fahrrad'
    """

    def __init__(self, cfg: Config, model: torch.nn.Module, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer,
                 device: torch.device, more_models: Sequence[torch.nn.Module] = ()) -> None:
        self.cfg = cfg
        self.model = model.eval()
        self.models = [self.model] + [m.eval() for m in more_models]  # decoded together: an ensemble
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.device = device
        self.glossary = Glossary()  # applied to every call (merged under a call's own ``glossary=``): --glossary
        self.source_words = SourceWords(src_tokenizer, capitalized_nouns=cfg.data.src_lang in NOUNS_CAPITALIZED)
        # protected spans as constraints of beam search too (glossary terms always are); off: restored through the
        # attention like in greedy search, which measured better on Multi30k val (docs/preservation.md)
        self.spans_as_constraints = False
        # the measurement of ``dtype: auto`` is cached in the user's own cache, never under the data.cache_dir of a
        # model directory's config.yaml (a model from elsewhere must not choose where loading it writes, nor plant
        # the cached choice it is then given)
        self.autocast_dtype = choose_autocast(cfg.decode.dtype, device, model,
                                              decoding_work(cfg.decode.batch_size, cfg.decode.beam_size),
                                              DataConfig().cache_dir)
        #: turns confidence features into an estimate of sentence chrF (the model directory's confidence.json)
        self.calibration: Calibration | None = None
        self.source_piece_stats = SourcePieceStats.of(src_tokenizer)

    @classmethod
    def load(cls, model_dir: str | Path | Sequence[str | Path], device: str = "auto", quantize: str | None = None,
             dtype: str | None = None, threads: int | None = None, backend: str = "torch") -> "Translator":
        """Load a model directory (config.yaml, tokenizers, model.safetensors), or several as an ensemble.

        Args:
            model_dir: one directory (or ``hf:ORG/NAME[@REVISION]``, a model on the Hugging Face Hub: see
                :mod:`seq2seq.hub`), or a list of them: an ensemble averaging the models' log-probabilities per
                step (they must share both tokenizers; the first one's ``decode`` settings apply).
            device: ``auto`` | ``cpu`` | ``cuda``.
            quantize: ``int8`` for dynamic int8 quantization of linear layers (CPU inference).
            dtype: compute dtype ``auto`` | ``fp32`` | ``tf32`` | ``bf16`` | ``fp16`` (default: the model's
                ``decode.dtype``); ``auto`` times decoding in each candidate once per machine and caches the choice.
            threads: CPU threads for torch (``torch.set_num_threads``, for the whole process; default: torch's).
            backend: ``torch``, or ``onnx``: the encoder and decoder step exported to ``MODEL_DIR/onnx/`` by
                ``python -m seq2seq.onnx_export`` run in onnxruntime on the CPU (fp32; see docs/onnx.md).
        """
        cfg, models, src_tok, tgt_tok, resolved = load_decoding_models(model_dir, device, quantize, dtype, threads,
                                                                        backend)
        translator = cls(cfg, models[0], src_tok, tgt_tok, resolved, models[1:])
        first = model_dir if isinstance(model_dir, (str, Path)) else list(model_dir)[0]
        try:  # the first model's; a damaged file costs the calibration, not the model
            translator.calibration = load_calibration(resolve_model_dir(first), FEATURE_NAMES)
        except ValueError as err:
            logger.warning("confidences are uncalibrated: %s", err)
        return translator

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

    def decode_options(self, beam_size: int | None = None, nbest: int = 1, return_attention: bool = False,
                       batch_size: int | None = None, sampling: bool = False) -> DecodeOptions:
        """The model's ``decode`` settings with these overrides (None = the model's), checked: ValueError names
        the one out of range."""
        beam_size = self.cfg.decode.beam_size if beam_size is None else int(beam_size)
        check_beam_size(beam_size)
        check_nbest(nbest, beam_size, sampling)
        if batch_size is not None:
            check_batch_size(batch_size)
        return DecodeOptions.from_config(self.cfg.decode, beam_size=beam_size, nbest=nbest,
                                         return_attention=return_attention, batch_size=batch_size)

    def _target_phrases(self, words: str | Sequence[str] | None) -> list[list[int]]:
        """Constraint words -> target piece id lists (each as it would appear after a space)."""
        words = [words] if isinstance(words, str) else list(words or [])
        phrases = self.tgt_tokenizer.encode([w.strip() for w in words]) if words else []
        for word, phrase in zip(words, phrases):
            if not phrase:
                raise ValueError(f"constraint {word!r} has no target pieces (empty?)")
        return phrases

    def max_target_pieces(self) -> int:
        """The most target pieces a prefix or a target to score may have: the longest translation any input may get,
        ``decode.max_len_a * decode.max_src_length + decode.max_len_b`` (user text is bounded like the output)."""
        decode = self.cfg.decode
        return int(decode.max_len_a * decode.max_src_length + decode.max_len_b)

    def check_target_lengths(self, pieces: Sequence[Sequence[int]], what: str,
                             numbers: Sequence[int] | None = None) -> None:
        """ValueError naming the first of ``pieces`` (target piece lists of ``what``, e.g. "prefix", numbered by
        ``numbers``, default 1, 2, ...) over :meth:`max_target_pieces`, before any decoding."""
        limit = self.max_target_pieces()
        numbers = range(1, len(pieces) + 1) if numbers is None else numbers
        for number, ids in zip(numbers, pieces):
            if len(ids) > limit:
                raise ValueError(f"{what} {number} has {len(ids)} target pieces; the limit is {limit} "
                                 "(decode.max_len_a * decode.max_src_length + decode.max_len_b, the longest "
                                 "translation the model may give)")

    def check_prefix(self, prefix: str | None) -> None:
        """ValueError when ``prefix`` is longer than :meth:`max_target_pieces`, before any decoding."""
        if prefix:
            self.check_target_lengths(self.tgt_tokenizer.encode([prefix]), "prefix")

    def check_constraints(self, words: Sequence[str]) -> None:
        """ValueError naming the first constraint that has no target pieces (e.g. ``" "``), before any decoding."""
        self._target_phrases(words)

    def generate(
        self,
        texts: Sequence[str],
        *,
        beam_size: int | None = None,
        nbest: int = 1,
        return_attention: bool = False,
        batch_size: int | None = None,
        prefix: str | Sequence[str | None] | None = None,
        constraints: Sequence[str] | Sequence[Sequence[str]] | None = None,
        sampling: Sampling | None = None,
        progress: Callable[[int], None] | None = None,
        trace: list | None = None,
        confidence: bool = True,
        preserve: bool = True,
        glossary: GlossaryInput = None,
        do_not_translate: Sequence[str] = (),
    ) -> list[list[Translation]]:
        """Translate a list of texts; per input its n-best list of :class:`Translation`, best first.

        Args:
            texts: the inputs (a list of str; for one string use ``generate([text])`` or :meth:`translate`).
            beam_size: 1 = greedy; default the model's ``decode.beam_size``.
            nbest: hypotheses per input (<= beam_size), or samples per input when sampling (<= 100).
            return_attention: fill each Translation's ``attention``, ``src_pieces`` and ``tgt_pieces``.
            prefix: target text every translation must start with (one for all inputs, or one per input; None
                or "" = free); the translation includes it.
            constraints: words/phrases every translation must contain (a list for all inputs, or one list per
                input): lexically constrained beam search.
            sampling: draw ``nbest`` samples per input (temperature, top-k, top-p, seed) instead of searching; the
                samples come in the order drawn, and an input's samples depend only on the seed and the input (the
                same alone, in any batch, or streamed).
            progress: called with the number of inputs done as they finish (empty inputs first, then each
                decoded batch), e.g. a tqdm bar's ``update``; the counts add up to the number of inputs.
            trace: a list that receives, per input, greedy or beam search's step records (see
                :func:`seq2seq.decoding.search.beam_search`; batch row 0 is the input; empty for an empty input
                and for constrained or sampled inputs); each input is then decoded on its own.
            confidence: fill each Translation's ``piece_probs``, ``confidence`` and ``low_confidence`` (one more
                teacher-forced pass of the outputs, batched; see docs/confidence.md).
            preserve: carry names, numbers, URLs, e-mail addresses, codes and rare-character spans over verbatim
                (:mod:`seq2seq.protected_spans`), restored through the attention after the search
                (:mod:`seq2seq.decoding.span_copy`; as constraints of beam search too with ``spans_as_constraints``).
            glossary: source term -> target term, a dict or a list of pairs (a one-term entry: keep it as is),
                on top of ``self.glossary``; matched as whole words, case-insensitive, longest first; constraints
                of beam search (not of traced searches), restored through the attention otherwise.
            do_not_translate: terms to copy untranslated (as written in the input).
        Returns:
            per input (same order, same count) a non-empty list of at most ``nbest`` translations. Empty or
            whitespace-only inputs translate to one ``""`` (score 0) without running the model. Each
            translation's ``kept`` and ``missing`` list the spans and glossary terms that are (not) in it.
        """
        if isinstance(texts, str):
            raise TypeError("generate() takes a list of str; for one string use generate([text]) or translate(text)")
        lines = list(texts)
        for i, line in enumerate(lines):
            if not isinstance(line, str):
                raise TypeError(f"translate() takes str or a list of str; item {i} is {type(line).__name__}")
        options = self.decode_options(beam_size, nbest, return_attention, batch_size, sampling is not None)
        prefixes, word_lists = _per_input(prefix, len(lines), "prefix"), _per_input(constraints, len(lines), "constraints")

        nonempty = [i for i, line in enumerate(lines) if line.strip()]
        translations: list[list[Translation]] = [[Translation(text="", tokens=[], score=0.0)] for _ in lines]
        traces: list[list[dict]] = [[] for _ in lines]
        if progress is not None and len(nonempty) < len(lines):
            progress(len(lines) - len(nonempty))
        if nonempty:
            src_ids = self.encode_sources([lines[i] for i in nonempty], [i + 1 for i in nonempty])
            prefix_ids = [self.tgt_tokenizer.encode([prefixes[i]])[0] if prefixes[i] else [] for i in nonempty]
            self.check_target_lengths(prefix_ids, "the prefix of input", [i + 1 for i in nonempty])
            spans = self.spans([lines[i] for i in nonempty], preserve, glossary, do_not_translate, src_ids)
            if sampling is None and trace is None and options.beam_size > 1:  # beam search places glossary terms
                word_lists = list(word_lists)
                for position, index in enumerate(nonempty):
                    placed = [s for s in spans[position][0] if s.kind == "glossary" or self.spans_as_constraints]
                    words = constraint_words(placed, self.tgt_tokenizer)
                    word_lists[index] = list(dict.fromkeys(list(word_lists[index] or []) + words)) or None
            if any(read or unread for read, unread in spans):
                options = dataclasses.replace(options, return_attention=True)
            phrases = [self._target_phrases(word_lists[i]) for i in nonempty]
            decode = dict(device=self.device, autocast_dtype=self.autocast_dtype, progress=progress, sampling=sampling)
            if trace is None:
                hypotheses = translate_ids(self.models, src_ids, options, prefixes=prefix_ids, constraints=phrases,
                                           **decode)
            else:  # one input at a time: each trace's row 0 is its input
                hypotheses = []
                for position, index in enumerate(nonempty):
                    hypotheses += translate_ids(self.models, src_ids[position : position + 1], options,
                                                prefixes=prefix_ids[position : position + 1],
                                                constraints=phrases[position : position + 1], trace=traces[index],
                                                **decode)
            for position, (index, ids, hyps) in enumerate(zip(nonempty, src_ids, hypotheses)):
                translations[index] = self._translations(ids, hyps, options.return_attention)
                carry_spans(translations[index], lines[index], spans[position], self.src_tokenizer,
                            self.tgt_tokenizer, len(prefix_ids[position]), return_attention)
            if confidence:  # of the search's tokens (a restored text keeps them)
                add_confidence([translations[i] for i in nonempty], src_ids, [lines[i] for i in nonempty],
                               self.models, self.source_piece_stats, self.calibration, options.batch_size,
                               self.device, self.autocast_dtype)
        if trace is not None:
            trace.extend(traces)
        return translations

    def spans(self, lines: Sequence[str], preserve: bool = True, glossary: GlossaryInput = None,
              do_not_translate: Sequence[str] = (), src_ids: list[list[int]] | None = None):
        """Per line (the protected spans and glossary terms the model reads, those past ``decode.max_src_length``):
        what :meth:`generate` carries over and reports (``src_ids``: the lines already encoded)."""
        src_ids = self.encode_sources(list(lines)) if src_ids is None else src_ids
        return spans_of_inputs(list(lines), src_ids, self.source_words, self.glossary.merged(glossary,
                               do_not_translate), preserve, self.src_tokenizer)

    def _translations(self, src_ids: list[int], hypotheses: list[Hypothesis], attention: bool) -> list[Translation]:
        """One input's hypotheses as text (with the attention and the pieces that label it when asked for)."""
        texts = self.tgt_tokenizer.decode([h.tokens for h in hypotheses])
        entry = []
        for text, hyp in zip(texts, hypotheses):
            translation = Translation(text=text, tokens=hyp.tokens, score=hyp.score)
            if attention:
                translation.attention = hyp.attention
                translation.src_pieces = [self.src_tokenizer.id_to_piece(i) for i in src_ids]
                translation.tgt_pieces = [self.tgt_tokenizer.id_to_piece(i) for i in hyp.tokens] + ["</s>"]
            entry.append(translation)
        return entry

    def translate(
        self,
        text: Union[str, Sequence[str]],
        beam_size: int | None = None,
        nbest: int = 1,
        return_scores: bool = False,
        return_attention: bool = False,
        batch_size: int | None = None,
        prefix: str | Sequence[str | None] | None = None,
        constraints: Sequence[str] | Sequence[Sequence[str]] | None = None,
        sampling: Sampling | None = None,
        progress: Callable[[int], None] | None = None,
        preserve: bool = True,
        glossary: GlossaryInput = None,
        do_not_translate: Sequence[str] = (),
    ):
        """Translate one string or a list of strings: :meth:`generate`'s best texts.

        The arguments are :meth:`generate`'s (``nbest`` samples per input when ``sampling``).
        Returns:
            ``str`` for a string, ``list[str]`` for a list (same order, same count). For compatibility,
            ``return_scores`` / ``return_attention`` / ``nbest > 1`` return per input a :class:`Translation`
            (``nbest == 1``) or a list of them, best first, with their confidence; new code calls :meth:`generate`
            for those. Texts alone come without the confidence's extra pass.
        Empty or whitespace-only inputs translate to ``""`` (score 0) without running the model.
        """
        single = isinstance(text, str)
        rich = return_scores or return_attention or nbest > 1  # Translations out: with their confidence
        results = self.generate([text] if single else text, beam_size=beam_size, nbest=nbest,
                                return_attention=return_attention, batch_size=batch_size, prefix=prefix,
                                constraints=constraints, sampling=sampling, progress=progress, confidence=rich,
                                preserve=preserve, glossary=glossary, do_not_translate=do_not_translate)
        if rich:
            out = [entry[0] if nbest == 1 else entry for entry in results]
        else:
            out = [entry[0].text for entry in results]
        return out[0] if single else out

    def score(self, sources: Union[str, Sequence[str]], targets: Union[str, Sequence[str]],
              batch_size: int | None = None, return_attention: bool = False):
        """How probable the model finds given translations (forced decoding).

        Returns:
            per pair a :class:`~seq2seq.decoding.forced.TargetScore` (``score``: length-normalized as beam search ranks,
            ``log_prob``: the sum, ``token_log_probs``: per target piece then EOS, ``pieces``: their names); one
            for a single string pair.
        """
        single = isinstance(sources, str)
        if single != isinstance(targets, str):
            raise TypeError("score() takes two strings or two lists of strings")
        sources, targets = ([sources], [targets]) if single else (list(sources), list(targets))
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets: they must pair up one to one")
        src_ids = self.encode_sources(sources)
        tgt_ids = self.tgt_tokenizer.encode(targets) if targets else []
        self.check_target_lengths(tgt_ids, "target")
        options = self.decode_options(batch_size=batch_size, return_attention=return_attention)
        results: list[TargetScore] = score_ids(self.models, src_ids, tgt_ids, options, device=self.device,
                                               autocast_dtype=self.autocast_dtype)
        for result in results:
            result.pieces = [self.tgt_tokenizer.id_to_piece(i) for i in result.tokens] + ["</s>"]
        return results[0] if single else results
