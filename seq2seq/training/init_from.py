"""Fine-tuning: a new run that starts from a trained model (``python -m seq2seq.train --init-from MODEL``, config key
``train.init_from``), a model directory or ``hf:ORG/NAME[@REVISION]``.

The new run takes the model's weights, its two tokenizers and its architecture (every ``model.*`` key but the
ones that only change how it trains, every ``tokenizer.*`` key that shaped the SentencePiece models), and its
languages unless ``--src-lang`` / ``--tgt-lang`` say otherwise; everything else is the new run's own: the data, a
fresh optimizer, the learning rate, warmup and schedule annealed to its own budget (``--max-minutes`` /
``--max-steps``), its own ``last/`` for an exact ``--resume``. A config file or override that names an
architecture key with another value than the model's is one clear error naming the key
(:func:`check_matches_model`). ``config.yaml`` keeps ``train.init_from``, and the model card says it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from seq2seq.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, model_dir_location
from seq2seq.config import SEGMENTATION_SAMPLING_KEYS, Config, ConfigError, load_config, parse_override
from seq2seq.tokenizer import SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE

logger = logging.getLogger("seq2seq.train")

#: ``model.*`` keys a fine-tuning run may set to other values: they change how the model trains, not its weights
TRAINING_ONLY_MODEL_KEYS = ("dropout", "word_dropout", "rnn_impl")
#: what the flag is called in errors
FLAG = "--init-from (train.init_from)"


def init_model_dir(reference: str) -> Path:
    """The local model directory ``reference`` names (an ``hf:`` one downloaded into the HF cache, a
    ``DIR/model.safetensors`` taken as ``DIR``); CheckpointError naming it and what to do when it is no model."""
    from seq2seq.hub import resolve_model_dir

    directory = model_dir_location(resolve_model_dir(reference))
    for name in (CONFIG_FILE, SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"{FLAG} {reference}: {directory / name} is missing; fine-tuning starts from a "
                                  "trained model directory (config.yaml, tokenizer.src.model, tokenizer.tgt.model, "
                                  "model.safetensors), e.g. the --out of an earlier training run")
    return directory


def inherited_settings(model_cfg: Config) -> dict[str, Any]:
    """``{"section.key": value}`` a fine-tuning run takes from the model's config: its architecture and the
    settings its tokenizers were trained with."""
    inherited = {f"model.{key}": value for key, value in model_cfg.to_dict()["model"].items()
                 if key not in TRAINING_ONLY_MODEL_KEYS}
    inherited.update({f"tokenizer.{key}": value for key, value in model_cfg.to_dict()["tokenizer"].items()
                      if key not in SEGMENTATION_SAMPLING_KEYS})
    return inherited


def explicit_keys(config_path: str | Path | None, overrides: list[str]) -> set[str]:
    """The ``section.key`` names a config file and the overrides set (whatever their values)."""
    keys = set()
    if config_path is not None and Path(config_path).is_file():
        raw = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}
        for section, values in raw.items() if isinstance(raw, dict) else ():
            keys.update(f"{section}.{key}" for key in (values if isinstance(values, dict) else {}))
    for text in overrides:
        section, key, _ = parse_override(text)
        keys.add(f"{section}.{key}")
    return keys


def check_matches_model(cfg: Config, model_cfg: Config, model_dir: Path) -> None:
    """ConfigError naming the first architecture or tokenizer key of ``cfg`` that differs from the model's."""
    current = cfg.to_dict()
    for dotted, value in inherited_settings(model_cfg).items():
        section, key = dotted.split(".")
        if current[section][key] != value:
            raise ConfigError(
                f"config key '{dotted}' = {current[section][key]!r} contradicts the model to fine-tune ({FLAG}): "
                f"{model_dir / CONFIG_FILE} says {value!r}. Fine-tuning keeps the model's architecture and "
                f"tokenizers: drop {dotted} from the config and the --set overrides, or train a new model without "
                f"--init-from (only model.{', model.'.join(TRAINING_ONLY_MODEL_KEYS)} and the tokenizer's "
                "segmentation sampling may change)")


def adopt_model_settings(cfg: Config, explicit: set[str]) -> Config:
    """``cfg`` for a new fine-tuning run from the command line: the model's architecture, tokenizer settings and
    (unless given) languages filled in where the config file and overrides said nothing; an architecture key they
    set otherwise is a ConfigError naming it (:func:`check_matches_model`)."""
    model_dir = init_model_dir(cfg.train.init_from)
    model_cfg = load_config(model_dir / CONFIG_FILE)
    for dotted, value in inherited_settings(model_cfg).items():
        if dotted not in explicit:
            section, key = dotted.split(".")
            setattr(getattr(cfg, section), key, value)
    for key in ("src_lang", "tgt_lang"):
        if f"data.{key}" not in explicit:
            setattr(cfg.data, key, getattr(model_cfg.data, key))
    check_matches_model(cfg, model_cfg, model_dir)
    return cfg.validate()


def start_from_model(cfg: Config, out_dir: Path) -> Path:
    """For a new run with ``train.init_from``: check the config against the model, put the model's tokenizers into
    ``out_dir`` (the run loads them from there) and return the model directory whose weights the run starts from."""
    model_dir = init_model_dir(cfg.train.init_from)
    model_cfg = load_config(model_dir / CONFIG_FILE)
    check_matches_model(cfg, model_cfg, model_dir)
    for name in (SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE):
        present = out_dir / name
        if present.is_file() and present.read_bytes() != (model_dir / name).read_bytes():
            raise CheckpointError(f"{present} is not the tokenizer of the model to fine-tune ({model_dir / name}); "
                                  "delete it or choose another --out")
        if not present.is_file():
            shutil.copyfile(model_dir / name, present)
    if (cfg.data.src_lang, cfg.data.tgt_lang) != (model_cfg.data.src_lang, model_cfg.data.tgt_lang):
        logger.warning("fine-tuning a %s->%s model on %s->%s data: its tokenizers were trained on the model's "
                       "languages", model_cfg.data.src_lang, model_cfg.data.tgt_lang, cfg.data.src_lang,
                       cfg.data.tgt_lang)
    logger.info("fine-tuning from %s (%s): its weights, tokenizers and architecture; a fresh optimizer and this "
                "run's schedule", cfg.train.init_from, model_dir)
    return model_dir
