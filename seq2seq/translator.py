"""Python API: ``Translator.load(model_dir).translate(text_or_lines)`` and ``.generate(lines, nbest=...)``.

Layers (each usable alone, one return shape each): :func:`seq2seq.decoding.driver.translate_ids` /
:func:`~seq2seq.decoding.driver.score_ids` (ids in, hypotheses or scores out, batched and sorted by length internally,
results in input order) -> :meth:`Translator.generate` (texts in, per input its n-best list of
:class:`~seq2seq.translation.Translation` out) -> :meth:`Translator.translate` (str in, str out; list in, list of str
out); :meth:`Translator.score` for given translations. ``Translator.load([A, B])`` loads an ensemble. What a call is
asked is checked in seq2seq/translator_inputs.py; the command-line tools are thin layers over this module.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

from seq2seq.backends import load_decoding_models
from seq2seq.calibration import FEATURE_NAMES, Calibration, load_calibration
from seq2seq.config import Config, DataConfig
from seq2seq.decoding import numpy_search
from seq2seq.decoding.hypothesis import Hypothesis
from seq2seq.decoding.options import DecodeOptions
from seq2seq.decoding.span_copy import carry_spans, constraint_words, spans_of_inputs
from seq2seq.glossary import Glossary, GlossaryInput
from seq2seq.hub import resolve_model_dir
from seq2seq.onnx_graphs import OnnxGraphs
from seq2seq.protected_spans import NOUNS_CAPITALIZED, SourceWords
from seq2seq.tokenizer import Tokenizer, without_lone_surrogates
from seq2seq.translation import Translation, translations_of
from seq2seq.translator_inputs import TranslatorInputs, per_input

if TYPE_CHECKING:  # torch and the torch searches are imported where they run: not by the runtime without torch
    from seq2seq.decoding.forced import TargetScore
    from seq2seq.decoding.sampling import Sampling

__all__ = ["Translation", "Translator"]

logger = logging.getLogger(__name__)

#: what :meth:`Translator.translate` took before it returned texts only; :meth:`Translator.generate` takes them
RICH_RESULT_ARGUMENTS = ("nbest", "return_scores", "return_attention")


class Translator(TranslatorInputs):
    """A trained model (or an ensemble of models sharing tokenizers) ready to translate text.

    >>> tr = Translator.load("runs/multi30k_en_de")           # doctest: +SKIP
    >>> tr.translate("a man is riding a bike")                 # doctest: +SKIP
    'ein mann fährt fahrrad'
    """

    def __init__(self, cfg: Config, model, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, device,
                 more_models: Sequence = ()) -> None:
        self.cfg = cfg
        self.model = model.eval()
        self.models = [self.model] + [m.eval() for m in more_models]  # decoded together: an ensemble
        #: onnxruntime graphs decoded by the numpy searches, without torch (``backend="onnx"``)
        self.runtime = isinstance(self.model, OnnxGraphs)
        self._torch_graphs: list | None = None  # the graphs wrapped for the torch searches, once one is needed
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.device = device
        self.glossary = Glossary()  # applied to every call (merged under a call's own ``glossary=``): --glossary
        self.source_words = SourceWords(src_tokenizer, capitalized_nouns=cfg.data.src_lang in NOUNS_CAPITALIZED)
        # protected spans as constraints of beam search too (glossary terms always are); off: restored through the
        # attention like in greedy search, which measured better on Multi30k val (docs/preservation.md)
        self.spans_as_constraints = False
        self.autocast_dtype = None
        if not self.runtime:
            from seq2seq.decoding.search import decoding_work
            from seq2seq.dtype_auto import choose_autocast

            # the measurement of ``dtype: auto`` is cached in the user's own cache, never under the data.cache_dir
            # of a model directory's config.yaml (a model from elsewhere must not choose where loading it writes,
            # nor plant the cached choice it is then given)
            self.autocast_dtype = choose_autocast(cfg.decode.dtype, device, model,
                                                  decoding_work(cfg.decode.batch_size, cfg.decode.beam_size),
                                                  DataConfig().cache_dir)
        #: turns confidence features into an estimate of sentence chrF (the model directory's confidence.json)
        self.calibration: Calibration | None = None
        self._source_piece_stats = None

    @property
    def source_piece_stats(self):
        """The source pieces' statistics the confidence features read (computed on first use): a
        :class:`~seq2seq.decoding.confidence.SourcePieceStats`, or numpy's on the runtime without torch."""
        if self._source_piece_stats is None and self.runtime:
            from seq2seq.decoding.numpy_confidence import NumpyPieceStats

            self._source_piece_stats = NumpyPieceStats.of(self.src_tokenizer)
        elif self._source_piece_stats is None:
            from seq2seq.decoding.confidence import SourcePieceStats

            self._source_piece_stats = SourcePieceStats.of(self.src_tokenizer)
        return self._source_piece_stats

    def torch_models(self, what: str) -> tuple[list, Any]:
        """``(models, device)`` for the torch searches, which ``what`` (e.g. "sampling") needs: the loaded models,
        or with ``backend="onnx"`` the graphs wrapped for them (torch is imported then; a warning says so once)."""
        if not self.runtime:
            return self.models, self.device
        if self._torch_graphs is None:
            logger.warning("--backend onnx: %s runs the torch search over the onnxruntime graphs (torch is imported "
                           "for it); greedy and beam search run without torch", what)
            from seq2seq.onnx_runtime import OnnxSeq2Seq

            self._torch_graphs = [OnnxSeq2Seq(graphs) for graphs in self.models]
        return self._torch_graphs, "cpu"

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
                raise TypeError(f"generate() takes a list of str; item {i} is {type(line).__name__}")
        # as the tokenizer reads them: a protected span copies input text into the output, which must be UTF-8
        lines = [without_lone_surrogates(line) for line in lines]
        options = self.decode_options(beam_size, nbest, return_attention, batch_size, sampling is not None)
        prefixes, word_lists = per_input(prefix, len(lines), "prefix"), per_input(constraints, len(lines), "constraints")

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
            phrases = [self.target_phrases(word_lists[i]) for i in nonempty]
            if trace is None:
                hypotheses = self.translate_ids(src_ids, options, prefix_ids, phrases, sampling, None, progress)
            else:  # one input at a time: each trace's row 0 is its input
                hypotheses = []
                for position, index in enumerate(nonempty):
                    hypotheses += self.translate_ids(src_ids[position : position + 1], options,
                                                     prefix_ids[position : position + 1],
                                                     phrases[position : position + 1], sampling, traces[index],
                                                     progress)
            for position, (index, ids, hyps) in enumerate(zip(nonempty, src_ids, hypotheses)):
                translations[index] = translations_of(ids, hyps, options.return_attention, self.src_tokenizer,
                                                   self.tgt_tokenizer)
                carry_spans(translations[index], lines[index], spans[position], self.src_tokenizer,
                            self.tgt_tokenizer, len(prefix_ids[position]), return_attention)
            if confidence:  # of the search's tokens (a restored text keeps them)
                from seq2seq.sentence_confidence import add_confidence

                add_confidence([translations[i] for i in nonempty], src_ids, [lines[i] for i in nonempty],
                               self.models, self.source_piece_stats, self.calibration, options.batch_size,
                               self.device, self.autocast_dtype)
        if trace is not None:
            trace.extend(traces)
        return translations

    def translate_ids(self, src_ids: list[list[int]], options: DecodeOptions, prefixes: list[list[int]],
                      phrases: list[list[list[int]]], sampling: Sampling | None, trace: list | None,
                      progress: Callable[[int], None] | None) -> list[list[Hypothesis]]:
        """The search's hypotheses per source: :func:`seq2seq.decoding.numpy_search.translate_ids` on the onnxruntime
        graphs where it serves the mode (greedy and beam search), else :func:`seq2seq.decoding.driver.translate_ids`."""
        if self.runtime and numpy_search.serves(sampling=sampling, constraints=phrases, trace=trace):
            return numpy_search.translate_ids(self.models, src_ids, options, prefixes=prefixes, progress=progress)
        from seq2seq.decoding.driver import translate_ids

        what = ("sampling" if sampling is not None else "a traced search" if trace is not None
                else "constrained beam search (constraints, glossary terms)")
        models, device = self.torch_models(what)
        return translate_ids(models, src_ids, options, device=device, autocast_dtype=self.autocast_dtype,
                             prefixes=prefixes, constraints=phrases, sampling=sampling, trace=trace, progress=progress)

    def spans(self, lines: Sequence[str], preserve: bool = True, glossary: GlossaryInput = None,
              do_not_translate: Sequence[str] = (), src_ids: list[list[int]] | None = None):
        """Per line (the protected spans and glossary terms the model reads, those past ``decode.max_src_length``):
        what :meth:`generate` carries over and reports (``src_ids``: the lines already encoded)."""
        lines = [without_lone_surrogates(line) for line in lines]
        src_ids = self.encode_sources(lines) if src_ids is None else src_ids
        return spans_of_inputs(lines, src_ids, self.source_words, self.glossary.merged(glossary,
                               do_not_translate), preserve, self.src_tokenizer)

    def translate(
        self,
        text: Union[str, Sequence[str]],
        beam_size: int | None = None,
        *,
        batch_size: int | None = None,
        prefix: str | Sequence[str | None] | None = None,
        constraints: Sequence[str] | Sequence[Sequence[str]] | None = None,
        sampling: Sampling | None = None,
        progress: Callable[[int], None] | None = None,
        preserve: bool = True,
        glossary: GlossaryInput = None,
        do_not_translate: Sequence[str] = (),
        **rich_results,
    ) -> Union[str, list[str]]:
        """Translate one string or a list of strings: :meth:`generate`'s best texts, texts only.

        The arguments are :meth:`generate`'s (one sample per input when ``sampling``).
        Returns:
            ``str`` for a string, ``list[str]`` for a list (same order, same count), nothing else: n-best lists,
            scores, attention and confidence come from :meth:`generate` (``nbest``, ``return_scores`` or
            ``return_attention`` here raise a TypeError that says so). Texts come without the confidence's extra
            pass. Empty or whitespace-only inputs translate to ``""`` without running the model.
        """
        if rich_results:
            names = ", ".join(sorted(rich_results))
            if set(rich_results) <= set(RICH_RESULT_ARGUMENTS):
                raise TypeError(f"translate() returns texts only and takes no {names}: call generate(texts, ...), "
                                "which returns per input a list of Translation (text, score, tokens, attention, "
                                "confidence; nbest=, return_attention=)")
            raise TypeError(f"translate() got unexpected keyword arguments: {names}")
        single = isinstance(text, str)
        results = self.generate([text] if single else text, beam_size=beam_size, batch_size=batch_size,
                                prefix=prefix, constraints=constraints, sampling=sampling, progress=progress,
                                confidence=False, preserve=preserve, glossary=glossary,
                                do_not_translate=do_not_translate)
        texts = [entry[0].text for entry in results]
        return texts[0] if single else texts

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
        for what, texts in (("source", sources), ("target", targets)):
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    raise TypeError(f"score() takes two strings or two lists of strings; {what} {i} is "
                                    f"{type(text).__name__}")
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets: they must pair up one to one")
        src_ids = self.encode_sources(sources)
        tgt_ids = self.tgt_tokenizer.encode(targets) if targets else []
        self.check_target_lengths(tgt_ids, "target")
        options = self.decode_options(batch_size=batch_size, return_attention=return_attention)
        from seq2seq.decoding.driver import score_ids

        models, device = self.torch_models("scoring (forced decoding)")
        results: list[TargetScore] = score_ids(models, src_ids, tgt_ids, options, device=device,
                                               autocast_dtype=self.autocast_dtype)
        for result in results:
            result.pieces = [self.tgt_tokenizer.id_to_piece(i) for i in result.tokens] + ["</s>"]
        return results[0] if single else results
