"""Typed configuration: dataclasses loaded from YAML and overridden from the command line.

A config has five sections (``data``, ``tokenizer``, ``model``, ``train``, ``decode``). Every value is
type-checked on load; an unknown key, a wrong type or a value outside its allowed set raises
:class:`ConfigError` naming the key and listing what is valid. The config is saved with every model
(``config.yaml``) and is what rebuilds it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

#: upper limits on decoding work, so that a tampered config.yaml (or a typo) cannot ask for an enormous decode: the
#: work of one batch grows with batch_size * beam_size * (max_len_a * source length + max_len_b)
MAX_BEAM_SIZE = 100
MAX_DECODE_BATCH_SIZE = 4096
MAX_LEN_A = 10.0
MAX_LEN_B = 1000


class ConfigError(ValueError):
    """A user-facing configuration problem (bad key, bad type, impossible value)."""


@dataclass
class DataConfig:
    #: a directory of ``{split}.{lang}[.gz]`` files, a local `datasets` directory, or a hub dataset name
    path: str = "bentrevett/multi30k"
    src_lang: str = "en"
    tgt_lang: str = "de"
    train_split: str = "train"
    valid_split: str = "val"
    test_splits: list[str] = field(default_factory=lambda: ["test_2016_flickr", "test_2017_flickr"])
    #: explicit file pairs per split, e.g. ``{train: [corpus.en, corpus.de]}``; they override ``path``
    files: dict[str, list[str]] = field(default_factory=dict)
    #: training pairs longer than this many pieces (either side, before BOS/EOS) are dropped
    max_length: int = 50
    #: where tokenized corpora are cached as Arrow files
    cache_dir: str = "~/.cache/seq2seq"
    #: processes that tokenize the training corpus (0 = auto: all cores from 100,000 pairs on, else one)
    num_workers: int = 0


#: tokenizer.* keys that change how training text is segmented, not the trained SentencePiece models
SEGMENTATION_SAMPLING_KEYS = ("sample_alpha", "bpe_dropout")


@dataclass
class TokenizerConfig:
    type: Literal["unigram", "bpe"] = "unigram"
    vocab_size: int = 8000
    #: one vocabulary for both languages (trained on both sides) instead of one per language
    joint: bool = False
    character_coverage: float = 1.0
    #: sentences sampled for SentencePiece training (0 = all); peak memory grows with it: ~2.2 GB at 500,000
    #: sentences of ~25 words, ~3.6 GB at 1,000,000 (README: Large corpora)
    input_sentence_size: int = 500_000
    #: strings kept as one piece wherever they occur (SentencePiece user_defined_symbols), e.g. ``["<2de>"]``
    user_symbols: list[str] = field(default_factory=list)
    #: subword regularization for ``type: unigram`` (Kudo 2018, arXiv 1804.10959): every training epoch samples
    #: each sentence's segmentation from the unigram lattice with this smoothing exponent (SentencePiece
    #: ``enable_sampling``, ``nbest_size=-1``; smaller is more random, the paper used 0.1-0.5). 0 = off: the best
    #: segmentation. Validation, test and translation always use the best segmentation (seq2seq/segmentation.py)
    sample_alpha: float = 0.0
    #: BPE-dropout for ``type: bpe`` (Provilkov et al. 2020, arXiv 1910.13267): the probability of skipping each
    #: merge when a training sentence is segmented, drawn anew every epoch (the paper used 0.1). 0 = off
    bpe_dropout: float = 0.0

    @property
    def sampling(self) -> float:
        """The SentencePiece ``alpha`` that training batches are segmented with (unigram smoothing or BPE
        dropout probability, by ``type``); 0 when every segmentation is the best one."""
        return self.sample_alpha if self.type == "unigram" else self.bpe_dropout

    def training_settings(self) -> dict[str, Any]:
        """The settings the SentencePiece models are trained with (what keys cached or reused tokenizers):
        everything but the segmentation sampling, which only changes how training text is segmented."""
        return {k: v for k, v in asdict(self).items() if k not in SEGMENTATION_SAMPLING_KEYS}


@dataclass
class ModelConfig:
    rnn_type: Literal["gru", "lstm"] = "gru"
    #: ``fused``: torch's cuDNN/oneDNN kernels; ``reference``: textbook cells from seq2seq/cells.py
    rnn_impl: Literal["fused", "reference"] = "fused"
    emb_size: int = 256
    encoder_hidden_size: int = 256
    encoder_layers: int = 1
    bidirectional: bool = True
    decoder_hidden_size: int = 512
    decoder_layers: int = 1
    attention: Literal["bahdanau", "luong_dot", "luong_general"] = "bahdanau"
    input_feeding: bool = True
    bridge: Literal["bridge", "last", "zero"] = "bridge"
    dropout: float = 0.2
    tie_embeddings: bool = False
    #: per-gate layer normalization in the decoder's RNN layers (Ba et al. 2016; RNMT+, Chen et al. 2018)
    layer_norm: bool = False
    #: residual connections between stacked encoder and decoder layers, from the second layer up (RNMT+)
    residual: bool = False
    #: attention heads (RNMT+'s multi-head additive attention); must divide the attention and memory sizes
    attention_heads: int = 1
    #: probability of dropping a whole source or target token embedding in training (Gal and Ghahramani 2016;
    #: Sennrich and Zhang 2019 used 0.3 on small corpora)
    word_dropout: float = 0.0


@dataclass
class TrainConfig:
    seed: int = 1234
    #: padded source + target positions per batch
    max_tokens: int = 4096
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    #: ``linear`` / ``cosine``: warmup, then anneal to ``min_lr`` exactly at the end of the budget
    #: (``max_steps`` / ``max_minutes``); ``plateau``: warmup then decay on a validation-BLEU plateau;
    #: ``inverse_sqrt``; ``constant`` (+ warmup)
    scheduler: Literal["linear", "cosine", "plateau", "inverse_sqrt", "constant"] = "plateau"
    warmup_steps: int = 0
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    accumulate: int = 1
    #: decay of an exponential moving average of the weights, validated beside the raw weights and kept as
    #: the model when it scores higher (0 = off; 0.999 averages over about the last 1,000 steps)
    ema_decay: float = 0.0
    #: probability of feeding the gold token at each step (< 1 = scheduled sampling)
    teacher_forcing_ratio: float = 1.0
    max_steps: int = 0
    max_epochs: int = 0
    max_minutes: float = 0.0
    #: validate every this many steps, and at the end of the budget (a periodic validation less than half an
    #: interval before the budget's end is skipped: the final one follows)
    valid_every: int = 500
    #: also save the training state (``last/``) every this many minutes of training, so that a killed run loses
    #: at most this much work (0 = save only at validation, at the end and on Ctrl-C / SIGTERM)
    save_every: float = 5.0
    #: validations without a BLEU improvement before stopping (0 = never stop early)
    patience: int = 10
    #: validation sentences decoded for BLEU (0 = all)
    valid_bleu_sentences: int = 0
    log_every: int = 50
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: compute dtype under autocast; the loss, the recurrent state and the gate arithmetic stay fp32.
    #: ``auto``: the fastest on this machine for this model, measured once and cached (seq2seq/precision.py):
    #: fp32 or bf16 on a CPU; tf32, bf16 or fp16 (with a grad scaler) on CUDA
    dtype: Literal["auto", "fp32", "tf32", "bf16", "fp16"] = "auto"
    #: CPU threads (0 = all cores)
    threads: int = 0
    #: consecutive non-finite losses tolerated (each skipped) before training aborts
    max_bad_steps: int = 5
    #: compile the decoder step with torch.compile (faster steps after a one-off compile of about a minute)
    compile: bool = False
    #: also write the train_log.jsonl scalars as TensorBoard event files under OUT/tensorboard/ (needs the
    #: ``tensorboard`` extra; seq2seq/training/tensorboard.py)
    tensorboard: bool = False
    #: under torchrun: minutes a rank waits for the others (rank 0's data preparation and validation included)
    #: before giving up with an error
    dist_timeout: float = 30.0


@dataclass
class DecodeConfig:
    beam_size: int = 5
    #: hypotheses may be up to ``max_len_a * source_length + max_len_b`` pieces long
    max_len_a: float = 1.5
    max_len_b: int = 10
    #: GNMT length penalty exponent alpha in ``((5 + len) / 6) ** alpha`` (0 = raw log-probability)
    length_penalty: float = 1.0
    #: fewer output pieces than this cannot end (EOS is banned): 1 = a non-empty source always gets at least one
    #: piece; 0 allows none. A piece may still detokenize to nothing (a lone word boundary ``▁``), so 1 does not
    #: promise non-empty text. A model directory's config.yaml keeps the value it was saved with (0 before
    #: this default became 1): edit its ``decode.min_length`` to change it
    min_length: int = 1
    no_repeat_ngram: int = 0
    nbest: int = 1
    #: sentences per batch
    batch_size: int = 64
    #: source lines longer than this many pieces are truncated, with a warning
    max_src_length: int = 250
    #: compute dtype for translation; ``auto`` measures as for training (decoding steps of this batch and beam size)
    dtype: Literal["auto", "fp32", "tf32", "bf16", "fp16"] = "auto"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    def validate(self) -> "Config":
        """Check values that are well-typed but impossible; raise ConfigError naming the key."""
        t = self.train
        checks = [
            ("tokenizer.vocab_size", self.tokenizer.vocab_size >= 8, ">= 8"),
            ("tokenizer.character_coverage", 0.0 < self.tokenizer.character_coverage <= 1.0, "in (0, 1]"),
            ("tokenizer.input_sentence_size", self.tokenizer.input_sentence_size == 0
             or self.tokenizer.input_sentence_size > 100, "0 (all sentences) or > 100 (SentencePiece's minimum)"),
            ("tokenizer.sample_alpha", 0.0 <= self.tokenizer.sample_alpha < float("inf"),
             "a finite number >= 0 (0 = off)"),
            ("tokenizer.bpe_dropout", 0.0 <= self.tokenizer.bpe_dropout < 1.0, "in [0, 1) (0 = off)"),
            ("train.log_every", t.log_every >= 1, ">= 1"),
            ("train.warmup_steps", t.warmup_steps >= 0, ">= 0"),
            ("train.weight_decay", t.weight_decay >= 0, ">= 0"),
            ("train.min_lr", t.min_lr >= 0, ">= 0"),
            ("train.patience", t.patience >= 0, ">= 0 (0 = never stop early)"),
            ("train.plateau_patience", t.plateau_patience >= 1, ">= 1"),
            ("train.max_epochs", t.max_epochs >= 0, ">= 0 (0 = no limit)"),
            ("train.valid_bleu_sentences", t.valid_bleu_sentences >= 0, ">= 0 (0 = all)"),
            ("train.threads", t.threads >= 0, ">= 0 (0 = all cores)"),
            ("train.betas", len(t.betas) == 2 and all(0.0 <= b < 1.0 for b in t.betas), "two numbers in [0, 1)"),
            ("model.emb_size", self.model.emb_size >= 1, ">= 1"),
            ("model.encoder_hidden_size", self.model.encoder_hidden_size >= 1, ">= 1"),
            ("model.decoder_hidden_size", self.model.decoder_hidden_size >= 1, ">= 1"),
            ("model.encoder_layers", self.model.encoder_layers >= 1, ">= 1"),
            ("model.decoder_layers", self.model.decoder_layers >= 1, ">= 1"),
            ("model.dropout", 0.0 <= self.model.dropout < 1.0, "in [0, 1)"),
            ("model.word_dropout", 0.0 <= self.model.word_dropout < 1.0, "in [0, 1)"),
            ("model.attention_heads", self.model.attention_heads >= 1
             and self.model.decoder_hidden_size % self.model.attention_heads == 0
             and self.model.encoder_hidden_size * (2 if self.model.bidirectional else 1) % self.model.attention_heads == 0,
             ">= 1 and a divisor of model.decoder_hidden_size and of the encoder output size"),
            ("data.max_length", self.data.max_length >= 1, ">= 1"),
            ("data.num_workers", self.data.num_workers >= 0, ">= 0 (0 = auto)"),
            ("train.max_tokens", self.train.max_tokens >= 2, ">= 2"),
            ("train.lr", 0 < self.train.lr < float("inf"), "a finite number > 0"),
            ("train.label_smoothing", 0.0 <= self.train.label_smoothing < 1.0, "in [0, 1)"),
            ("train.clip_norm", self.train.clip_norm >= 0, ">= 0 (0 = no clipping)"),
            ("train.accumulate", self.train.accumulate >= 1, ">= 1"),
            ("train.dist_timeout", 0 < self.train.dist_timeout < float("inf"), "a finite number of minutes > 0"),
            ("train.teacher_forcing_ratio", 0.0 <= self.train.teacher_forcing_ratio <= 1.0, "in [0, 1]"),
            ("train.valid_every", self.train.valid_every >= 1, ">= 1"),
            ("train.max_steps", self.train.max_steps >= 0, ">= 0 (0 = no limit)"),
            ("train.max_minutes", self.train.max_minutes >= 0, ">= 0 (0 = no limit)"),
            ("train.plateau_factor", 0.0 < self.train.plateau_factor < 1.0, "in (0, 1)"),
            ("train.max_bad_steps", self.train.max_bad_steps >= 1, ">= 1"),
            ("train.ema_decay", 0.0 <= self.train.ema_decay < 1.0, "in [0, 1) (0 = off)"),
            ("train.save_every", t.save_every >= 0, ">= 0 (minutes; 0 = save only at validation)"),
            ("decode.beam_size", 1 <= self.decode.beam_size <= MAX_BEAM_SIZE, f"in [1, {MAX_BEAM_SIZE}]"),
            ("decode.nbest", 1 <= self.decode.nbest <= self.decode.beam_size, "in [1, decode.beam_size]"),
            ("decode.batch_size", 1 <= self.decode.batch_size <= MAX_DECODE_BATCH_SIZE,
             f"in [1, {MAX_DECODE_BATCH_SIZE}]"),
            ("decode.max_len_a", 0 <= self.decode.max_len_a <= MAX_LEN_A, f"in [0, {MAX_LEN_A}]"),
            ("decode.max_len_b", 1 <= self.decode.max_len_b <= MAX_LEN_B, f"in [1, {MAX_LEN_B}]"),
            ("decode.min_length", self.decode.min_length >= 0, ">= 0"),
            ("decode.no_repeat_ngram", self.decode.no_repeat_ngram >= 0, ">= 0 (0 = off)"),
            ("decode.max_src_length", self.decode.max_src_length >= 1, ">= 1"),
        ]
        for key, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"config key '{key}' = {_get(self, key)!r} is out of range: must be {allowed}")
        symbols = self.tokenizer.user_symbols
        for i, symbol in enumerate(symbols):
            if not symbol or any(c.isspace() for c in symbol) or symbol in SPECIAL_PIECES or symbol in symbols[:i]:
                raise ConfigError(
                    f"config key 'tokenizer.user_symbols[{i}]' = {symbol!r} is not allowed: each symbol must be a "
                    f"non-empty string without whitespace, listed once, and none of {', '.join(SPECIAL_PIECES)}"
                )
        tok = self.tokenizer
        if tok.sample_alpha > 0 and tok.type != "unigram":
            raise ConfigError(f"tokenizer.sample_alpha = {tok.sample_alpha} samples unigram segmentations, but "
                              f"tokenizer.type = {tok.type}; for BPE set tokenizer.bpe_dropout (e.g. 0.1) instead")
        if tok.bpe_dropout > 0 and tok.type != "bpe":
            raise ConfigError(f"tokenizer.bpe_dropout = {tok.bpe_dropout} drops BPE merges, but tokenizer.type = "
                              f"{tok.type}; for unigram set tokenizer.sample_alpha (e.g. 0.1) instead")
        if t.scheduler in ("linear", "cosine") and not (t.max_steps or t.max_minutes):
            raise ConfigError(
                f"train.scheduler = {t.scheduler} anneals the learning rate to the end of the training budget: set "
                "train.max_minutes or train.max_steps (--max-minutes / --max-steps), or use train.scheduler=plateau"
            )
        m = self.model
        if m.attention == "luong_dot":
            memory = m.encoder_hidden_size * (2 if m.bidirectional else 1)
            if memory != m.decoder_hidden_size:
                raise ConfigError(
                    f"model.attention = luong_dot needs the encoder output size ({memory}) to equal "
                    f"model.decoder_hidden_size ({m.decoder_hidden_size}); use luong_general or bahdanau"
                )
        if m.bridge == "last":
            memory = m.encoder_hidden_size * (2 if m.bidirectional else 1)
            if memory != m.decoder_hidden_size:
                raise ConfigError(
                    f"model.bridge = last needs the encoder final state size ({memory}) to equal "
                    f"model.decoder_hidden_size ({m.decoder_hidden_size}); use bridge or zero"
                )
        return self


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
#: SentencePiece's special pieces (seq2seq/tokenizer.py fixes their ids)
SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>")


def _get(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".", 1)
    return getattr(getattr(cfg, section), key)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` checked against the annotation ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' = {value!r} is not allowed; choose one of: {', '.join(map(str, args))}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool) or value is None:
            raise ConfigError(
                f"config key '{key}' must be a string, got {value!r} (YAML reads no/yes/on/off/~ specially: quote it)"
            )
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"config key '{key}' has an unsupported type {tp!r}")  # pragma: no cover


def _section_fields(section_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


def _apply(cfg: Config, section: str, key: str, value: Any, source: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"{source}: unknown config section '{section}'; valid sections: {', '.join(SECTIONS)}")
    section_obj = getattr(cfg, section)
    fields = _section_fields(type(section_obj))
    if key not in fields:
        raise ConfigError(
            f"{source}: unknown config key '{section}.{key}'; valid keys in '{section}': {', '.join(fields)}"
        )
    setattr(section_obj, key, _coerce(value, fields[key], f"{section}.{key}"))


def config_from_dict(raw: dict[str, Any] | None, source: str = "config") -> Config:
    """Build a Config from nested dicts (missing keys keep their defaults)."""
    cfg = Config()
    if raw is None:
        return cfg
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)}), got {type(raw).__name__}")
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown config section '{section}'; valid sections: {', '.join(SECTIONS)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping of keys to values")
        for key, value in values.items():
            _apply(cfg, section, str(key), value, source)
    return cfg


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value`` (value in YAML syntax) into ``(section, key, value)``."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value, e.g. train.lr=0.0005")
    dotted, raw_value = text.split("=", 1)
    if dotted.count(".") != 1:
        raise ConfigError(
            f"override '{text}': the key must be section.key with a section from {', '.join(SECTIONS)}"
        )
    section, key = dotted.strip().split(".")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': cannot parse the value: {err}") from None
    return section, key, value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings; values of string keys are taken verbatim (``tgt_lang=no``)."""
    for text in overrides:
        section, key, value = parse_override(text)
        section_obj = getattr(cfg, section, None)
        if section in SECTIONS and _section_fields(type(section_obj)).get(key) is str:
            value = text.split("=", 1)[1].strip()
        _apply(cfg, section, key, value, f"override '{text}'")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None), apply overrides, validate."""
    raw: Any = None
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
    cfg = config_from_dict(raw, source)
    apply_overrides(cfg, overrides or [])
    return cfg.validate()
