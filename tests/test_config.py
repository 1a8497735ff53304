"""Config: YAML round trip, typed overrides, and errors that name the key and say what is valid."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from seq2seq.config import Config, ConfigError, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_yaml(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_message(path: Path | None = None, overrides: list[str] | None = None) -> str:
    """The message of the ConfigError that ``load_config(path, overrides)`` must raise."""
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, overrides)
    return str(excinfo.value)


def a_changed_config() -> Config:
    """A config that differs from the defaults in every section, in lists, dicts and awkward floats."""
    cfg = Config()
    cfg.data.test_splits = ["test_2016_flickr", "test_2018_flickr", "mscoco"]
    cfg.data.files = {"train": ["corpus.en", "corpus.de"], "val": ["dev.en", "dev.de"]}
    cfg.data.src_lang, cfg.data.tgt_lang = "de", "en"
    cfg.tokenizer.type, cfg.tokenizer.joint, cfg.tokenizer.vocab_size = "bpe", True, 12000
    cfg.model.rnn_type, cfg.model.rnn_impl, cfg.model.encoder_layers = "lstm", "reference", 2
    cfg.model.dropout = 0.35
    cfg.train.lr, cfg.train.min_lr, cfg.train.betas = 0.0003, 1e-7, [0.8, 0.98]
    cfg.train.max_minutes = 12.5
    cfg.decode.beam_size, cfg.decode.nbest, cfg.decode.length_penalty = 8, 3, 0.6
    return cfg


# --- loading, round trip, overrides -------------------------------------------------------------------


def test_defaults_load_and_validate():
    assert load_config() == Config()
    assert issubclass(ConfigError, ValueError)


def test_yaml_round_trip(tmp_path):
    cfg = a_changed_config()
    path = write_yaml(tmp_path, cfg.to_yaml())
    loaded = load_config(path)
    assert loaded == cfg
    assert loaded.to_dict() == cfg.to_dict()
    assert loaded.data.files == {"train": ["corpus.en", "corpus.de"], "val": ["dev.en", "dev.de"]}
    assert isinstance(loaded.train.min_lr, float) and loaded.train.min_lr == 1e-7

    cfg.save(tmp_path / "saved.yaml")  # save() writes the same thing
    assert load_config(tmp_path / "saved.yaml") == cfg


def test_partial_yaml_keeps_defaults(tmp_path):
    path = write_yaml(tmp_path, "model:\n  rnn_type: lstm\ntrain:\ndecode: {}\n")
    cfg = load_config(path)
    expected = Config()
    expected.model.rnn_type = "lstm"
    assert cfg == expected
    assert load_config(write_yaml(tmp_path, "", "empty.yaml")) == Config()


def test_overrides_apply_with_types(tmp_path):
    path = write_yaml(tmp_path, "train:\n  lr: 0.01\n  max_tokens: 1000\nmodel:\n  rnn_type: gru\n")
    cfg = load_config(
        path,
        overrides=[
            "train.lr=0.0005",
            "model.rnn_type=lstm",
            "data.test_splits=[a, b]",
            "train.max_tokens=2048",
            "model.bidirectional=false",
            "decode.length_penalty=1",
            "data.files={train: [x.en, x.de]}",
        ],
    )
    assert cfg.train.lr == 0.0005 and isinstance(cfg.train.lr, float)  # the override beats the file
    assert cfg.model.rnn_type == "lstm"
    assert cfg.data.test_splits == ["a", "b"]
    assert cfg.train.max_tokens == 2048 and isinstance(cfg.train.max_tokens, int)
    assert cfg.model.bidirectional is False
    assert cfg.decode.length_penalty == 1.0 and isinstance(cfg.decode.length_penalty, float)
    assert cfg.data.files == {"train": ["x.en", "x.de"]}
    assert load_config(overrides=["data.path=  "]).data.path == ""  # an empty value is the empty string


def test_configs_do_not_share_mutable_defaults():
    first, second = load_config(), load_config()
    first.data.files["train"] = ["extra.en", "extra.de"]
    first.train.betas[0] = 0.5
    assert second.data.files == Config().data.files == {}
    assert second.train.betas == [0.9, 0.999]


# --- unknown keys and sections ---------------------------------------------------------------------------


def test_unknown_key_in_yaml_names_it_and_lists_valid_keys(tmp_path):
    path = write_yaml(tmp_path, "model:\n  hiden_size: 300\n")
    message = error_message(path)
    assert "model.hiden_size" in message
    assert str(path) in message
    assert all(key in message for key in ("encoder_hidden_size", "decoder_hidden_size", "rnn_type", "dropout"))


def test_unknown_key_in_override_names_it_and_lists_valid_keys():
    message = error_message(overrides=["train.learning_rate=0.1"])
    assert "train.learning_rate" in message
    assert all(key in message for key in ("lr", "max_tokens", "label_smoothing"))


@pytest.mark.parametrize("source", ["yaml", "override"])
def test_unknown_section(tmp_path, source):
    if source == "yaml":
        message = error_message(write_yaml(tmp_path, "optim:\n  lr: 0.1\n"))
    else:
        message = error_message(overrides=["optim.lr=0.1"])
    assert "optim" in message
    assert all(section in message for section in ("data", "tokenizer", "model", "train", "decode"))


@pytest.mark.parametrize("text", ["train.lr", "lr=0.1", "train.lr.x=0.1"])
def test_malformed_override(text):
    assert text in error_message(overrides=[text])


# --- wrong types and choices -------------------------------------------------------------------------------


WRONG_TYPES = [
    ("train", "max_tokens", '"many"', "integer"),  # string for int
    ("train", "max_tokens", "4096.5", "integer"),  # float for int
    ("train", "max_tokens", "true", "integer"),  # bool for int
    ("model", "bidirectional", "1", "true or false"),  # int for bool
    ("model", "bidirectional", '"true"', "true or false"),  # string for bool
    ("train", "lr", "fast", "number"),
    ("train", "lr", "false", "number"),
    ("data", "test_splits", "test_2016", "list"),
    ("data", "files", "[a.en, a.de]", "mapping"),
    ("data", "src_lang", "[en]", "string"),
    ("train", "betas", "[0.9, high]", "number"),
]


@pytest.mark.parametrize("source", ["yaml", "override"])
@pytest.mark.parametrize("section,key,value,expected", WRONG_TYPES, ids=[f"{s}.{k}={v}" for s, k, v, _ in WRONG_TYPES])
def test_wrong_type_names_key_and_expected_type(tmp_path, source, section, key, value, expected):
    if source == "yaml":
        message = error_message(write_yaml(tmp_path, f"{section}:\n  {key}: {value}\n"))
    elif expected == "string":
        pytest.skip("string keys take override text verbatim (so data.tgt_lang=no stays 'no')")
    else:
        message = error_message(overrides=[f"{section}.{key}={value}"])
    assert f"{section}.{key}" in message
    assert expected in message


@pytest.mark.parametrize(
    "override,choices",
    [
        ("model.rnn_type=rnn", ["gru", "lstm"]),
        ("model.attention=dot", ["bahdanau", "luong_dot", "luong_general"]),
        ("model.rnn_impl=cudnn", ["fused", "reference"]),
        ("tokenizer.type=wordpiece", ["unigram", "bpe"]),
        ("train.dtype=fp8", ["fp32", "bf16", "fp16"]),
    ],
)
def test_choice_error_lists_choices(override, choices):
    message = error_message(overrides=[override])
    assert override.split("=")[0] in message
    assert all(choice in message for choice in choices)


# --- impossible values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["decode.beam_size=0"], "decode.beam_size"),
        (["decode.nbest=6"], "decode.nbest"),  # default beam_size is 5
        (["decode.beam_size=3", "decode.nbest=4"], "decode.nbest"),
        (["model.dropout=1.5"], "model.dropout"),
        (["model.dropout=-0.1"], "model.dropout"),
        (["train.lr=0"], "train.lr"),
        (["train.label_smoothing=1.0"], "train.label_smoothing"),
        (["model.encoder_layers=0"], "model.encoder_layers"),
        (["train.teacher_forcing_ratio=1.2"], "train.teacher_forcing_ratio"),
        (["model.dropout=.nan"], "model.dropout"),
        (["tokenizer.input_sentence_size=100"], "tokenizer.input_sentence_size"),  # SentencePiece needs > 100
        (["data.num_workers=-1"], "data.num_workers"),
    ],
)
def test_impossible_value_names_key(overrides, key):
    assert key in error_message(overrides=overrides)


def test_boundary_values_are_accepted():
    cfg = load_config(overrides=["decode.beam_size=4", "decode.nbest=4", "model.dropout=0"])
    assert (cfg.decode.beam_size, cfg.decode.nbest, cfg.model.dropout) == (4, 4, 0.0)
    assert load_config(overrides=["decode.beam_size=1"]).decode.nbest == 1
    assert load_config(overrides=["tokenizer.input_sentence_size=101"]).tokenizer.input_sentence_size == 101
    assert load_config(overrides=["tokenizer.input_sentence_size=0"]).tokenizer.input_sentence_size == 0


def test_impossible_value_in_yaml_names_key(tmp_path):
    assert "decode.beam_size" in error_message(write_yaml(tmp_path, "decode:\n  beam_size: 0\n"))


def test_luong_dot_needs_matching_sizes():
    # a bidirectional 256 encoder gives 512-wide memory, which matches the default 512 decoder
    assert load_config(overrides=["model.attention=luong_dot"]).model.attention == "luong_dot"
    message = error_message(overrides=["model.attention=luong_dot", "model.bidirectional=false"])
    assert "luong_dot" in message and "model.decoder_hidden_size" in message
    assert "256" in message and "512" in message
    assert load_config(overrides=["model.attention=luong_general", "model.bidirectional=false"])


def test_last_bridge_needs_matching_sizes():
    message = error_message(overrides=["model.bridge=last", "model.encoder_hidden_size=300"])
    assert "model.bridge" in message and "model.decoder_hidden_size" in message


# --- files -----------------------------------------------------------------------------------------------


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.yaml"
    message = error_message(path)
    assert str(path) in message and "not found" in message


@pytest.mark.parametrize("text", ["data: {path: [1}\n", "model:\n  rnn_type: gru\n   dropout: 0.1\n", "a: b: c\n"])
def test_malformed_yaml_names_path(tmp_path, text):
    path = write_yaml(tmp_path, text)
    message = error_message(path)
    assert str(path) in message and "YAML" in message


@pytest.mark.parametrize("text", ["- data\n- model\n", "just a string\n", "model: [gru]\n"])
def test_yaml_of_the_wrong_shape_names_path(tmp_path, text):
    path = write_yaml(tmp_path, text)
    assert str(path) in error_message(path)


@pytest.mark.parametrize("name", ["multi30k_en_de.yaml", "multi30k_en_de_1h.yaml", "multi30k_en_de_gpu.yaml",
                                  "sweeps/base.yaml"])
def test_shipped_configs_load_and_round_trip(tmp_path, name):
    cfg = load_config(REPO_ROOT / "configs" / name)
    assert (cfg.data.src_lang, cfg.data.tgt_lang) == ("en", "de")
    assert load_config(write_yaml(tmp_path, cfg.to_yaml())) == cfg


def test_shipped_recipes_anneal_to_their_budget():
    """The quick-start recipes are budget recipes: a linear schedule over a time budget, and no early stopping."""
    for name, minutes in [("multi30k_en_de.yaml", 20), ("multi30k_en_de_1h.yaml", 60), ("multi30k_en_de_gpu.yaml", 10)]:
        train = load_config(REPO_ROOT / "configs" / name).train
        assert (train.scheduler, train.max_minutes, train.patience) == ("linear", minutes, 0)
        assert 0 < train.ema_decay < 1


def test_the_1_hour_recipe_is_the_20_minute_recipe_over_an_hour_with_more_dropout():
    """docs/experiments.md (pairs H and I) chose the 20-minute recipe annealed over 60 minutes with dropout 0.3 and word
    dropout 0.1; nothing else may differ."""
    short, hour = (load_config(REPO_ROOT / "configs" / name) for name in ("multi30k_en_de.yaml", "multi30k_en_de_1h.yaml"))
    assert (hour.train.max_minutes, hour.model.dropout, hour.model.word_dropout) == (60, 0.3, 0.1)
    hour.train.max_minutes, hour.model.dropout, hour.model.word_dropout = (short.train.max_minutes, short.model.dropout,
                                                                           short.model.word_dropout)
    assert hour == short


def test_every_field_has_a_default_that_round_trips(tmp_path):
    """Each section is a dataclass whose defaults survive YAML, so a saved model config rebuilds exactly."""
    for section in dataclasses.fields(Config):
        assert dataclasses.is_dataclass(getattr(Config(), section.name))
    assert load_config(write_yaml(tmp_path, Config().to_yaml())) == Config()


def test_scientific_floats_and_verbatim_string_overrides(tmp_path):
    cfg = load_config(write_yaml(tmp_path, "train:\n  lr: 1e-3\n  min_lr: 5e-6\n"), ["train.warmup_steps=10"])
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.min_lr == pytest.approx(5e-6)
    assert load_config(None, ["train.lr=5e-4"]).train.lr == pytest.approx(5e-4)
    cfg = load_config(None, ["data.tgt_lang=no", "data.src_lang=en"])
    assert cfg.data.tgt_lang == "no"
    message = error_message(write_yaml(tmp_path, "data:\n  tgt_lang: no\n"))
    assert "data.tgt_lang" in message and "quote" in message


@pytest.mark.parametrize("override", ["train.log_every=0", "train.warmup_steps=-1", "train.betas=[0.9]",
                                      "tokenizer.character_coverage=0", "train.lr=.inf", "train.patience=-2"])
def test_more_impossible_values(override):
    assert override.split("=")[0] in error_message(overrides=[override])


@pytest.mark.parametrize("overrides,key", [
    (["tokenizer.sample_alpha=-0.1"], "tokenizer.sample_alpha"),
    (["tokenizer.bpe_dropout=1.0"], "tokenizer.bpe_dropout"),
    (["tokenizer.type=bpe", "tokenizer.sample_alpha=0.1"], "tokenizer.bpe_dropout"),  # the key BPE needs
    (["tokenizer.bpe_dropout=0.1"], "tokenizer.sample_alpha"),  # unigram by default
])
def test_segmentation_sampling_keys_are_checked_against_the_model_type(overrides, key):
    assert key in error_message(overrides=overrides)


def test_segmentation_sampling_does_not_change_the_trained_tokenizers():
    plain, sampled = load_config(), load_config(overrides=["tokenizer.sample_alpha=0.2"])
    assert sampled.tokenizer.sampling == 0.2 and plain.tokenizer.sampling == 0.0
    assert load_config(overrides=["tokenizer.type=bpe", "tokenizer.bpe_dropout=0.1"]).tokenizer.sampling == 0.1
    assert sampled.tokenizer.training_settings() == plain.tokenizer.training_settings()
    assert load_config(overrides=["tokenizer.vocab_size=100"]).tokenizer.training_settings() != \
        plain.tokenizer.training_settings()


# --- the defaults are the recipe (issue 36) -------------------------------------------------------------------------


def test_the_defaults_are_the_20_minute_cpu_recipe():
    """Without --config a run gets the measured CPU recipe: configs/own_corpus.yaml and configs/multi30k_en_de.yaml
    (written out key by key, the reference here) equal the defaults but for the corpus they name."""
    own = load_config(REPO_ROOT / "configs" / "own_corpus.yaml")
    assert (own.data.path, own.data.tgt_lang, own.data.test_splits) == ("my_corpus", "fr", None)
    own.data.path, own.data.tgt_lang = Config().data.path, Config().data.tgt_lang
    assert own == Config()
    multi30k = load_config(REPO_ROOT / "configs" / "multi30k_en_de.yaml")
    assert multi30k.data.test_splits == ["test_2016_flickr", "test_2017_flickr"]
    multi30k.data.test_splits = None  # the defaults name no corpus's test splits: the corpus's own are scored
    assert multi30k == Config()
    cfg = Config()  # the recipe's values, by hand (docs/configuration.md)
    assert (cfg.tokenizer.type, cfg.tokenizer.vocab_size, cfg.model.rnn_type, cfg.model.input_feeding) == \
        ("unigram", 2000, "gru", False)
    assert (cfg.train.scheduler, cfg.train.lr, cfg.train.warmup_steps, cfg.train.ema_decay, cfg.train.max_tokens,
            cfg.train.valid_every, cfg.train.patience, cfg.train.max_minutes, cfg.model.dropout,
            cfg.decode.beam_size) == ("linear", 0.002, 100, 0.998, 2048, 1000, 0, 20.0, 0.2, 5)
    assert cfg.data.test_splits is None and cfg.data.files == {}


def test_the_2015_baseline_is_a_config_file():
    """configs/baseline_2015.yaml holds what the defaults were before issue 36 (values written out here)."""
    cfg = load_config(REPO_ROOT / "configs" / "baseline_2015.yaml")
    assert (cfg.tokenizer.vocab_size, cfg.model.input_feeding, cfg.train.max_tokens, cfg.train.lr,
            cfg.train.scheduler, cfg.train.warmup_steps, cfg.train.ema_decay, cfg.train.valid_every,
            cfg.train.patience, cfg.train.max_minutes) == (8000, True, 4096, 0.001, "plateau", 0, 0.0, 500, 10, 0.0)


@pytest.mark.parametrize("text, overrides, budget", [
    ("", [], (0, 0, 20.0)),                                                # no budget named: 20 minutes
    ("", ["train.max_steps=500"], (500, 0, 0.0)),                          # --max-steps 500 means 500 steps
    ("", ["train.max_epochs=3", "train.scheduler=plateau"], (0, 3, 0.0)),
    ("", ["train.max_steps=500", "train.max_minutes=5"], (500, 0, 5.0)),   # both named: both kept
    ("train:\n  max_steps: 300\n", [], (300, 0, 0.0)),                      # in a file as on the command line
    ("train:\n  max_minutes: 20\n", ["train.max_steps=500"], (500, 0, 20.0)),  # a recipe's time limit stays
    ("train:\n  max_steps: 0\n", [], (0, 0, 20.0)),                         # a step limit of 0 is none
])
def test_a_step_or_epoch_limit_without_a_time_limit_has_none(tmp_path, text, overrides, budget):
    train = load_config(write_yaml(tmp_path, text) if text else None, overrides).train
    assert (train.max_steps, train.max_epochs, train.max_minutes) == budget


def test_the_command_line_says_when_it_chose_the_budget(capsys):
    from seq2seq.training.arguments import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args(["--data", "my_corpus"])).train.max_minutes == 20
    assert "no training budget given: 20 minutes (train.max_minutes" in capsys.readouterr().err
    cfg = config_from_args(build_parser().parse_args(["--data", "my_corpus", "--max-steps", "40"]))
    assert (cfg.train.max_steps, cfg.train.max_minutes) == (40, 0) and capsys.readouterr().err == ""
