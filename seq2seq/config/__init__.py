"""Typed configuration: dataclasses loaded from YAML and overridden from the command line.

A config has five sections (``data``, ``tokenizer``, ``model``, ``train``, ``decode``). Every value is
type-checked on load; an unknown key, a wrong type or a value outside its allowed set raises
:class:`ConfigError` naming the key and listing what is valid. The config is saved with every model
(``config.yaml``) and is what rebuilds it.

- :mod:`~seq2seq.config.sections`: the sections, every key with its default and meaning;
- :mod:`~seq2seq.config.loading`: YAML files and ``section.key=value`` overrides, checked against the annotations;
- :mod:`~seq2seq.config.checks`: the range checks a well-typed config must still pass, and the decode settings'
  ranges (:data:`DECODE_RANGES`, :func:`nbest_range`) that the Python API and the command lines check against.
"""

from seq2seq.config.checks import DECODE_RANGES, check_config, in_decode_range, nbest_range
from seq2seq.config.loading import apply_overrides, config_from_dict, load_config, parse_override
from seq2seq.config.sections import (
    MAX_BEAM_SIZE,
    MAX_DECODE_BATCH_SIZE,
    MAX_LEN_A,
    MAX_LEN_B,
    MAX_SAMPLES,
    DTYPES,
    SECTIONS,
    SEGMENTATION_SAMPLING_KEYS,
    SPECIAL_PIECES,
    Config,
    ConfigError,
    DataConfig,
    DecodeConfig,
    ModelConfig,
    TokenizerConfig,
    TrainConfig,
)

__all__ = [
    "DECODE_RANGES", "DTYPES", "MAX_BEAM_SIZE", "MAX_DECODE_BATCH_SIZE", "MAX_LEN_A", "MAX_LEN_B", "MAX_SAMPLES",
    "SECTIONS", "SEGMENTATION_SAMPLING_KEYS", "SPECIAL_PIECES", "Config", "ConfigError", "DataConfig", "DecodeConfig",
    "ModelConfig", "TokenizerConfig", "TrainConfig", "apply_overrides", "check_config", "config_from_dict",
    "in_decode_range", "load_config", "nbest_range", "parse_override",
]
