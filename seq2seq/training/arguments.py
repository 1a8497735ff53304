"""The command line of ``python -m seq2seq.train`` (and of ``torchrun ... -m seq2seq.train``): its flags, and the
Config they select (a YAML file, flags for the common keys, ``--set section.key=value`` for any other)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seq2seq.checkpoint import CONFIG_FILE
from seq2seq.config import Config, load_config
from seq2seq.training.init_from import adopt_model_settings, explicit_keys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m seq2seq.train", description="Train an RNN translation model.")
    parser.add_argument("--config", help="YAML config (default: the built-in defaults, the 20-minute CPU recipe; with "
                                         "--resume: OUT/config.yaml)")
    parser.add_argument("--data", help="corpus: directory of {split}.{lang}[.gz] files, local datasets dir, or hub name")
    parser.add_argument("--src-lang", help="source language code (data.src_lang)")
    parser.add_argument("--tgt-lang", help="target language code (data.tgt_lang)")
    parser.add_argument("--out", default="runs/model", help="output directory (default: runs/model)")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (train.max_steps)")
    parser.add_argument("--max-minutes", type=float, help="stop after this many minutes (train.max_minutes)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="train.device")
    parser.add_argument("--tensorboard", action="store_true", default=None,
                        help="also log the scalars for TensorBoard under OUT/tensorboard/ (train.tensorboard)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    parser.add_argument("--init-from", metavar="MODEL",
                        help="fine-tune: start a new run from a trained model directory or hf:ORG/NAME (its weights, "
                             "tokenizers and architecture; a fresh optimizer and this run's schedule; train.init_from)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=0.0005 (repeatable)")
    parser.add_argument("extra_overrides", nargs="*", metavar="SECTION.KEY=VALUE", help="more overrides")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides) + list(args.extra_overrides)
    for flag, key in (("data", "data.path"), ("src_lang", "data.src_lang"), ("tgt_lang", "data.tgt_lang"),
                      ("max_steps", "train.max_steps"), ("max_minutes", "train.max_minutes"), ("device", "train.device"),
                      ("tensorboard", "train.tensorboard"), ("init_from", "train.init_from")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    config_path = args.config
    if config_path is None and args.resume and (Path(args.out) / CONFIG_FILE).is_file():
        config_path = Path(args.out) / CONFIG_FILE
    cfg = load_config(config_path, overrides)
    named = explicit_keys(config_path, overrides)
    if not args.resume and not named & {"train.max_steps", "train.max_epochs", "train.max_minutes"}:
        print(f"note: no training budget given: {cfg.train.max_minutes:g} minutes (train.max_minutes, the default, "
              "which the learning rate anneals to); --max-minutes M or --max-steps N sets another", file=sys.stderr)
    if cfg.train.init_from and not args.resume:  # a new fine-tuning run: the model's architecture and tokenizers
        cfg = adopt_model_settings(cfg, named)
    return cfg
