"""The checks a well-typed config must still pass: ranges, divisibility and keys that only make sense together.

Each failed check raises :class:`~seq2seq.config.sections.ConfigError` naming the key, its value and what it may
be (``config key 'train.lr' = 0.0 is out of range: must be a finite number > 0``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seq2seq.config.sections import (
    MAX_BEAM_SIZE,
    MAX_DECODE_BATCH_SIZE,
    MAX_LEN_A,
    MAX_LEN_B,
    MAX_SAMPLES,
    SPECIAL_PIECES,
    ConfigError,
)

#: the decode settings' ranges [lowest, highest], stated once: config.yaml's ``decode`` section, the Python API
#: (:mod:`seq2seq.decoding.options`) and the command-line flags (:mod:`seq2seq.command_line`) check against them
DECODE_RANGES = {"beam_size": (1, MAX_BEAM_SIZE), "batch_size": (1, MAX_DECODE_BATCH_SIZE),
                 "max_len_a": (0, MAX_LEN_A), "max_len_b": (1, MAX_LEN_B)}


def in_decode_range(name: str, value: float) -> bool:
    """Whether decode setting ``name`` (a key of :data:`DECODE_RANGES`) may be ``value``."""
    return _within(value, DECODE_RANGES[name])


def nbest_range(beam_size: int, sampling: bool = False) -> tuple[int, int]:
    """The n-best rule: an input gets 1 to ``beam_size`` hypotheses from a search, 1 to :data:`MAX_SAMPLES`
    samples when sampling."""
    return 1, (MAX_SAMPLES if sampling else beam_size)

if TYPE_CHECKING:
    from seq2seq.config.sections import Config


def _get(cfg: "Config", dotted: str) -> Any:
    section, key = dotted.split(".", 1)
    return getattr(getattr(cfg, section), key)


def _within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


def _decode_range_check(cfg: "Config", name: str) -> tuple[str, bool, str]:
    low, high = DECODE_RANGES[name]
    return f"decode.{name}", in_decode_range(name, getattr(cfg.decode, name)), f"in [{low}, {high}]"


def check_config(cfg: "Config") -> "Config":
    t, m = cfg.train, cfg.model
    memory = m.encoder_hidden_size * (2 if m.bidirectional else 1)  # the encoder's output (and final state) size
    checks = [
        ("tokenizer.vocab_size", cfg.tokenizer.vocab_size >= 8, ">= 8"),
        ("tokenizer.character_coverage", 0.0 < cfg.tokenizer.character_coverage <= 1.0, "in (0, 1]"),
        ("tokenizer.input_sentence_size", cfg.tokenizer.input_sentence_size == 0
         or cfg.tokenizer.input_sentence_size > 100, "0 (all sentences) or > 100 (SentencePiece's minimum)"),
        ("tokenizer.sample_alpha", 0.0 <= cfg.tokenizer.sample_alpha < float("inf"),
         "a finite number >= 0 (0 = off)"),
        ("tokenizer.bpe_dropout", 0.0 <= cfg.tokenizer.bpe_dropout < 1.0, "in [0, 1) (0 = off)"),
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
        ("model.emb_size", cfg.model.emb_size >= 1, ">= 1"),
        ("model.encoder_hidden_size", cfg.model.encoder_hidden_size >= 1, ">= 1"),
        ("model.decoder_hidden_size", cfg.model.decoder_hidden_size >= 1, ">= 1"),
        ("model.encoder_layers", cfg.model.encoder_layers >= 1, ">= 1"),
        ("model.decoder_layers", cfg.model.decoder_layers >= 1, ">= 1"),
        ("model.dropout", 0.0 <= cfg.model.dropout < 1.0, "in [0, 1)"),
        ("model.word_dropout", 0.0 <= cfg.model.word_dropout < 1.0, "in [0, 1)"),
        ("model.attention_heads", cfg.model.attention_heads >= 1
         and cfg.model.decoder_hidden_size % cfg.model.attention_heads == 0
         and memory % cfg.model.attention_heads == 0,
         ">= 1 and a divisor of model.decoder_hidden_size and of the encoder output size"),
        ("model.attention_layer", cfg.model.attention_layer == "top" or cfg.model.decoder_layers >= 2,
         "'top', or 'bottom' with model.decoder_layers >= 2"),
        ("data.max_length", cfg.data.max_length >= 1, ">= 1"),
        ("data.num_workers", cfg.data.num_workers >= 0, ">= 0 (0 = auto)"),
        ("data.held_out_pairs", cfg.data.held_out_pairs >= 1, ">= 1"),
        ("data.clean_max_ratio", cfg.data.clean_max_ratio == 0 or cfg.data.clean_max_ratio >= 1,
         "0 (off) or a ratio >= 1"),
        ("data.clean_min_script", 0.0 <= cfg.data.clean_min_script <= 1.0, "in [0, 1] (0 = off)"),
        ("train.max_tokens", cfg.train.max_tokens >= 2, ">= 2"),
        ("train.lr", 0 < cfg.train.lr < float("inf"), "a finite number > 0"),
        ("train.label_smoothing", 0.0 <= cfg.train.label_smoothing < 1.0, "in [0, 1)"),
        ("train.clip_norm", cfg.train.clip_norm >= 0, ">= 0 (0 = no clipping)"),
        ("train.accumulate", cfg.train.accumulate >= 1, ">= 1"),
        ("train.dist_timeout", 0 < cfg.train.dist_timeout < float("inf"), "a finite number of minutes > 0"),
        ("train.teacher_forcing_ratio", 0.0 <= cfg.train.teacher_forcing_ratio <= 1.0, "in [0, 1]"),
        ("train.valid_every", cfg.train.valid_every >= 1, ">= 1"),
        ("train.max_steps", cfg.train.max_steps >= 0, ">= 0 (0 = no limit)"),
        ("train.max_minutes", cfg.train.max_minutes >= 0, ">= 0 (0 = no limit)"),
        ("train.plateau_factor", 0.0 < cfg.train.plateau_factor < 1.0, "in (0, 1)"),
        ("train.max_bad_steps", cfg.train.max_bad_steps >= 1, ">= 1"),
        ("train.ema_decay", 0.0 <= cfg.train.ema_decay < 1.0, "in [0, 1) (0 = off)"),
        ("train.save_every", t.save_every >= 0, ">= 0 (minutes; 0 = save only at validation)"),
        _decode_range_check(cfg, "beam_size"),
        ("decode.nbest", _within(cfg.decode.nbest, nbest_range(cfg.decode.beam_size)), "in [1, decode.beam_size]"),
        _decode_range_check(cfg, "batch_size"),
        _decode_range_check(cfg, "max_len_a"),
        _decode_range_check(cfg, "max_len_b"),
        ("decode.min_length", cfg.decode.min_length >= 0, ">= 0"),
        ("decode.no_repeat_ngram", cfg.decode.no_repeat_ngram >= 0, ">= 0 (0 = off)"),
        ("decode.max_src_length", cfg.decode.max_src_length >= 1, ">= 1"),
    ]
    for key, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"config key '{key}' = {_get(cfg, key)!r} is out of range: must be {allowed}")
    symbols = cfg.tokenizer.user_symbols
    for i, symbol in enumerate(symbols):
        if not symbol or any(c.isspace() for c in symbol) or symbol in SPECIAL_PIECES or symbol in symbols[:i]:
            raise ConfigError(
                f"config key 'tokenizer.user_symbols[{i}]' = {symbol!r} is not allowed: each symbol must be a "
                f"non-empty string without whitespace, listed once, and none of {', '.join(SPECIAL_PIECES)}"
            )
    tok = cfg.tokenizer
    if tok.sample_alpha > 0 and tok.type != "unigram":
        raise ConfigError(f"tokenizer.sample_alpha = {tok.sample_alpha} samples unigram segmentations, but "
                          f"tokenizer.type = {tok.type}; for BPE set tokenizer.bpe_dropout (e.g. 0.1) instead")
    if tok.bpe_dropout > 0 and tok.type != "bpe":
        raise ConfigError(f"tokenizer.bpe_dropout = {tok.bpe_dropout} drops BPE merges, but tokenizer.type = "
                          f"{tok.type}; for unigram set tokenizer.sample_alpha (e.g. 0.1) instead")
    if t.scheduler in ("linear", "cosine") and not (t.max_steps or t.max_minutes):
        epochs = " (train.max_epochs alone does not say when that is)" if t.max_epochs else ""
        raise ConfigError(
            f"train.scheduler = {t.scheduler} anneals the learning rate to the end of the training budget{epochs}: "
            "set train.max_minutes or train.max_steps (--max-minutes / --max-steps), or use train.scheduler=plateau"
        )
    if m.attention == "luong_dot":
        if memory != m.decoder_hidden_size:
            raise ConfigError(
                f"model.attention = luong_dot needs the encoder output size ({memory}) to equal "
                f"model.decoder_hidden_size ({m.decoder_hidden_size}); use luong_general or bahdanau"
            )
    if m.bridge == "last":
        if memory != m.decoder_hidden_size:
            raise ConfigError(
                f"model.bridge = last needs the encoder final state size ({memory}) to equal "
                f"model.decoder_hidden_size ({m.decoder_hidden_size}); use bridge or zero"
            )
    return cfg
