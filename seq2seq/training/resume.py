"""Safe stopping and resuming: Ctrl-C / SIGTERM handled at a step boundary (:class:`StopRequest`), the settings an
exact ``--resume`` may not change (:func:`check_resume_config`), the compute dtypes it keeps
(:func:`resumed_dtypes`), and tokenizer models left in ``--out`` checked
against the run's ``tokenizer.*`` settings before they are reused (:func:`check_reused_tokenizers`).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from seq2seq.checkpoint import CONFIG_FILE, CheckpointError
from seq2seq.config import Config, ConfigError, load_config
from seq2seq.precision import AUTOCAST, ComputeDtypes, explicit_autocast
from seq2seq.training import TrainingError
from seq2seq.tokenizer import BYTE_PIECES, SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE, load_tokenizers

logger = logging.getLogger("seq2seq.train")


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM ask training to stop; the loop stops at the next step boundary.

    Within the ``with`` block the first signal only sets :attr:`requested` (the loop checks it between steps, so
    a saved state never holds a half-applied step); a second one raises KeyboardInterrupt at once, without
    saving (``last/`` keeps the previous complete state). Handlers are installed only in the main thread (Python
    delivers signals there) and restored afterwards.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None  # the name of the signal that asked
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        logger.warning("%s received: stopping after this step and saving the training state (send it again to stop "
                       "at once without saving)", self.requested)

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


#: settings a ``--resume`` may not change: they define the model, its vocabulary, or the order and content of
#: the batches (an exact resume replays the same batches from the saved position)
FIXED_ON_RESUME = ("model.", "tokenizer.", "data.path", "data.files", "data.src_lang", "data.tgt_lang",
                   "data.train_split", "data.max_length", "train.seed", "train.max_tokens", "train.accumulate",
                   "train.init_from", "data.held_out_pairs", "data.clean_duplicates", "data.clean_copies",
                   "data.clean_max_ratio", "data.clean_min_script")


def check_resume_config(cfg: Config, state_dir: Path) -> None:
    """Raise TrainingError naming the first key in FIXED_ON_RESUME whose value differs from the one the run in
    ``state_dir`` was trained with (``state.json`` holds its config; a damaged file is reported on loading)."""
    source = state_dir / "state.json"
    try:
        saved = json.loads(source.read_text(encoding="utf-8")).get("config")
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(saved, dict):
        return
    current = cfg.to_dict()
    for section, values in saved.items():
        for key, old in (values if isinstance(values, dict) else {}).items():
            dotted = f"{section}.{key}"
            new = current.get(section, {}).get(key)
            if any(dotted == fixed or (fixed.endswith(".") and dotted.startswith(fixed)) for fixed in FIXED_ON_RESUME) \
                    and new != old:
                raise TrainingError(
                    f"--resume cannot change {dotted} (the run in {state_dir.parent} was trained with {old!r}, "
                    f"this config says {new!r}): it changes the model or the batches; drop the change, or start a "
                    "new run with another --out")


def resumed_dtypes(cfg: Config, state_dir: Path, device: torch.device) -> ComputeDtypes | None:
    """The compute dtypes the run in ``state_dir`` trained and validated with (``state.json``'s ``dtypes``), which a
    resume keeps: ``dtype: auto`` is not decided again (a deleted cache, another thread count or another host
    could switch between bf16 and fp32 in the middle of the run). A dtype named in the config must be the saved
    one, and the saved one must run on ``device``; otherwise TrainingError says why. None for a state saved
    without them (by an older version): the dtypes are then chosen as for a new run."""
    try:
        saved = json.loads((state_dir / "state.json").read_text(encoding="utf-8")).get("dtypes")
    except (OSError, ValueError, AttributeError):
        return None  # a damaged file is reported on loading
    if saved is None:
        return None
    names = {}
    for key, requested in (("train", cfg.train.dtype), ("decode", cfg.decode.dtype)):
        name = saved.get(key) if isinstance(saved, dict) else None
        if name not in AUTOCAST:
            raise CheckpointError(f"{state_dir / 'state.json'}: 'dtypes' = {saved!r} does not name the {key} compute "
                                  f"dtype (one of {', '.join(AUTOCAST)}); the training state is damaged")
        if requested not in ("auto", name):
            raise TrainingError(f"--resume cannot change {key}.dtype: the run in {state_dir.parent} computed in "
                                f"{name} (resolved from {key}.dtype and saved in {state_dir / 'state.json'}), this "
                                f"config says {requested!r}; a resume in another dtype would not continue the run's "
                                f"numerics; set {key}.dtype to auto or {name}, or start a new run with another --out")
        try:
            explicit_autocast(name, device)
        except ConfigError as err:
            raise TrainingError(f"--resume cannot continue the run in {state_dir.parent} on {device}: it computed in "
                                f"{name} ({key}.dtype) and {err}; resume on the kind of device it was trained on, or "
                                "start a new run") from None
        names[key] = name
    logger.info("compute dtypes of the resumed run kept: training %s, validation decoding %s", names["train"],
                names["decode"])
    return ComputeDtypes(names["train"], names["decode"])


def check_reused_tokenizers(cfg: Config, out_dir: Path) -> None:
    """Tokenizer models already in ``out_dir`` are reused; raise TrainingError when they were trained with other
    ``tokenizer.*`` settings than ``cfg`` asks for (read from ``out_dir/config.yaml``, or, without one, judged by
    the vocabulary size and whether the vocabulary is joint)."""
    if not ((out_dir / SRC_TOKENIZER_FILE).is_file() and (out_dir / TGT_TOKENIZER_FILE).is_file()):
        return
    advice = (f"delete {out_dir / SRC_TOKENIZER_FILE} and {out_dir / TGT_TOKENIZER_FILE} to train new ones, or "
              "choose another --out")
    wanted = cfg.tokenizer.training_settings()
    if (out_dir / CONFIG_FILE).is_file():
        trained_with = load_config(out_dir / CONFIG_FILE).tokenizer.training_settings()
        for key, value in wanted.items():
            if trained_with[key] != value:
                raise TrainingError(f"the tokenizers in {out_dir} were trained with tokenizer.{key} = "
                                    f"{trained_with[key]!r} ({out_dir / CONFIG_FILE}), but this run asks for "
                                    f"{value!r}; {advice}")
        return
    src_tok, tgt_tok = load_tokenizers(out_dir)
    for tok in (src_tok, tgt_tok):
        limit = cfg.tokenizer.vocab_size + (BYTE_PIECES if tok.byte_fallback else 0)  # byte pieces come on top
        if tok.vocab_size > limit:
            raise TrainingError(f"{tok.source} has {tok.vocab_size} pieces, more than tokenizer.vocab_size = "
                                f"{cfg.tokenizer.vocab_size}{' + 256 byte pieces' if tok.byte_fallback else ''}; "
                                f"{advice}")
    if (src_tok is tgt_tok) != cfg.tokenizer.joint:
        raise TrainingError(f"the tokenizers in {out_dir} are {'one joint' if src_tok is tgt_tok else 'two separate'} "
                            f"vocabular{'y' if src_tok is tgt_tok else 'ies'}, but tokenizer.joint = "
                            f"{cfg.tokenizer.joint}; {advice}")
