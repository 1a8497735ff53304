"""Model directories, written atomically, loaded without unpickling.

A model directory is self-contained::

    config.yaml            the full Config that rebuilds the model
    tokenizer.src.model    SentencePiece models
    tokenizer.tgt.model
    model.safetensors      the (best) weights
    last/                  training state for --resume: model.safetensors, optimizer.safetensors,
                           average.safetensors (the weight average, when kept),
                           state.json (step, epoch, schedule, RNG, ...)

Every file is written to a temporary name and renamed into place; ``last/`` is replaced as a whole
(write ``last.tmp/``, swap), so a process killed at any moment leaves the previous complete state. A directory
whose run was stopped before its first validation has no ``model.safetensors`` yet; loading it says so. The
training state in ``last/`` is written and read by :mod:`seq2seq.training.saved_state` with the same helpers.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from seq2seq.config import Config, ConfigError, load_config
from seq2seq.tokenizer import SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE, Tokenizer, TokenizerError

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
#: the training state for --resume (seq2seq/training/saved_state.py writes and reads it)
LAST_DIR = "last"


if TYPE_CHECKING:  # torch and safetensors are imported where weights are read or written: the runtime without torch
    import torch  # loads a model directory's config and tokenizers (load_model_files) without them


class CheckpointError(ValueError):
    """A model directory or training state that cannot be written or loaded (names the file)."""


# ---------------------------------------------------------------------------- atomic writes
def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` (same directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except Exception as err:
        tmp_path.unlink(missing_ok=True)
        # safetensors reports a full disk as SafetensorError (matched by name: safetensors is imported by its writers)
        if not isinstance(err, OSError) and type(err).__name__ != "SafetensorError":
            raise
        reason = getattr(err, "strerror", None) or err
        raise CheckpointError(f"could not write {path}: {reason}; the previous file is unchanged") from err
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_weights(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Save tensors as safetensors (tied tensors stored once), atomically."""
    import safetensors.torch

    unique: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        unique[name] = tensor.detach().cpu().contiguous()
    atomic_write(path, lambda tmp: safetensors.torch.save_file(unique, str(tmp)))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (no pickle); a missing, truncated or corrupt file raises CheckpointError."""
    import safetensors.torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises SafetensorError / OSError / ValueError on damaged files
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({err}); it may be truncated or corrupted — "
            "re-copy it or use last/model.safetensors from the training run"
        ) from None


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Copy ``state`` into ``model``; mismatches (see :func:`check_state`) raise CheckpointError naming ``source``."""
    check_state(model, state, source)
    model.load_state_dict(state, strict=False)


def check_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Raise CheckpointError naming ``source`` unless ``state`` has exactly the keys and shapes of ``model`` (which
    may live on the meta device), floating-point tensors where the model has them, and only finite values."""
    import torch

    expected = model.state_dict()
    tied = _tied_names(model)
    missing = [k for k in expected if k not in state and k not in tied]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match the model that config.yaml describes: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{source} does not match config.yaml: '{name}' has shape {tuple(tensor.shape)} in the file "
                f"but the configured model needs {tuple(expected[name].shape)}"
            )
        if expected[name].is_floating_point() and not tensor.is_floating_point():
            raise CheckpointError(f"{source}: '{name}' has dtype {tensor.dtype}; the model needs floating point")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{source}: '{name}' holds NaN or infinite values; the weights are damaged")


def _tied_names(model: torch.nn.Module) -> set[str]:
    """Names in state_dict that alias an earlier tensor (e.g. tied output weights: the same Parameter object)."""
    seen, tied = set(), set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = id(tensor)  # not the storage address: that is 0 for every tensor on the meta device
        if key in seen:
            tied.add(name)
        seen.add(key)
    return tied


# ---------------------------------------------------------------------------- model directories
def save_model_dir(model_dir: str | Path, cfg: Config, model: torch.nn.Module, src_tok: Tokenizer, tgt_tok: Tokenizer) -> None:
    """Write config, tokenizers and weights into ``model_dir`` (each file atomically)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(model_dir / CONFIG_FILE, cfg.to_yaml())
    for tok, name in ((src_tok, SRC_TOKENIZER_FILE), (tgt_tok, TGT_TOKENIZER_FILE)):
        if not (model_dir / name).is_file():
            tok.save(model_dir / name)
    save_weights(model.state_dict(), model_dir / WEIGHTS_FILE)


def model_dir_location(location: str | Path) -> Path:
    """``location`` as a model directory: a directory (or a path that does not exist) as it is, and
    ``DIR/model.safetensors`` beside a ``config.yaml`` as ``DIR``; another file is a CheckpointError saying what
    to pass instead."""
    path = Path(location)
    if not path.is_file():
        return path
    if path.name == WEIGHTS_FILE and (path.parent / CONFIG_FILE).is_file():
        return path.parent
    if path.parent.name in (LAST_DIR, f"{LAST_DIR}.old"):
        raise CheckpointError(f"{path} is the training state's copy of the weights (for --resume); pass the run "
                              f"directory {path.parent.parent}, which holds the best model")
    raise CheckpointError(f"{path} is a file; pass the model directory that holds {CONFIG_FILE}, "
                          f"{SRC_TOKENIZER_FILE}, {TGT_TOKENIZER_FILE} and {WEIGHTS_FILE} (e.g. a training run's --out)")


def load_model_files(model_dir: str | Path, weights_file: str = WEIGHTS_FILE) -> tuple[Config, Tokenizer, Tokenizer]:
    """``(cfg, src_tokenizer, tgt_tokenizer)`` of a complete model directory (``DIR/model.safetensors`` is taken as
    ``DIR``), its weights file checked to be there but not read: all the runtime without torch loads besides the
    exported graphs. A missing or damaged file raises CheckpointError naming it."""
    model_dir = model_dir_location(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"model directory not found: {model_dir} (train one with `python -m seq2seq.train`)")
    for name in (CONFIG_FILE, SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE, weights_file):
        if (model_dir / name).exists() and not (model_dir / name).is_file():
            raise CheckpointError(f"{model_dir / name} is not a file (a directory?): {model_dir} is not a usable model "
                                  f"directory; put the model's {name} there")
    if (model_dir / CONFIG_FILE).is_file() and not (model_dir / weights_file).is_file():
        _no_model_yet(model_dir, weights_file)
    for name in (CONFIG_FILE, SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE, weights_file):
        if not (model_dir / name).is_file():
            raise CheckpointError(f"{model_dir / name} is missing: {model_dir} is not a complete model directory")
    try:
        cfg = load_config(model_dir / CONFIG_FILE)
    except ConfigError as err:
        message = str(err) if str(model_dir / CONFIG_FILE) in str(err) else f"{model_dir / CONFIG_FILE}: {err}"
        raise CheckpointError(message) from None
    try:
        src_tok = Tokenizer.load(model_dir / SRC_TOKENIZER_FILE)
        tgt_tok = Tokenizer.load(model_dir / TGT_TOKENIZER_FILE)
    except TokenizerError as err:
        raise CheckpointError(str(err)) from None
    return cfg, src_tok, tgt_tok


def load_model_dir(model_dir: str | Path, device: str | torch.device = "cpu", weights_file: str = WEIGHTS_FILE):
    """Load ``(cfg, model, src_tokenizer, tgt_tokenizer)`` from a model directory (``DIR/model.safetensors`` is
    taken as ``DIR``); model in eval mode.

    Never unpickles: YAML safe_load, SentencePiece protobufs, safetensors.
    """
    import torch

    from seq2seq.model import build_model

    cfg, src_tok, tgt_tok = load_model_files(model_dir, weights_file)
    model_dir = model_dir_location(model_dir)
    weights = load_weights(model_dir / weights_file)
    try:  # first on the meta device (nothing allocated), so that a config.yaml asking for a huge model fails fast
        with torch.device("meta"), _without_init():
            skeleton = build_model(cfg.model, src_tok.vocab_size, tgt_tok.vocab_size)
        check_state(skeleton, weights, model_dir / weights_file)
    except RuntimeError as err:
        raise CheckpointError(f"{model_dir / CONFIG_FILE}: cannot build the model it describes ({err})") from None
    with _without_init():  # every parameter is loaded next (checked above): no random init (~1 s of orthogonal QRs)
        model = build_model(cfg.model, src_tok.vocab_size, tgt_tok.vocab_size)
    model.load_state_dict(weights, strict=False)  # checked above; strict=False: tied weights are stored once
    return cfg, model.to(device).eval(), src_tok, tgt_tok


_skipping_init = threading.local()


@contextlib.contextmanager
def _without_init():
    """``torch.nn.init``'s functions as no-ops in this thread, for a model whose every parameter is loaded next, and
    for a skeleton on the meta device (initializing meta tensors runs torch's Python reference kernels, whose first
    call imports torch._dynamo: about 1.5 s of a translator's cold start). Other threads initialize as usual: the
    functions are wrapped once, and each wrapper asks this thread's flag."""
    from torch.nn import init

    if not getattr(init, "_seq2seq_skippable", False):
        for name in [n for n in vars(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]:
            setattr(init, name, _skippable(getattr(init, name)))
        init._seq2seq_skippable = True
    previous = getattr(_skipping_init, "active", False)
    _skipping_init.active = True
    try:
        yield
    finally:
        _skipping_init.active = previous


def _skippable(function):
    """``function``, or a no-op returning its tensor while :func:`_without_init` is active in the calling thread."""
    @functools.wraps(function)
    def wrapper(tensor, *args, **kwargs):
        return tensor if getattr(_skipping_init, "active", False) else function(tensor, *args, **kwargs)
    return wrapper


def _no_model_yet(model_dir: Path, weights_file: str) -> None:
    """Raise the CheckpointError for a training run that has not written its (best) weights yet."""
    missing = f"{model_dir / weights_file} is missing: no model yet in {model_dir}"
    if find_training_state(model_dir) is not None:
        raise CheckpointError(f"{missing}; training saved its state (last/) but was stopped before its first "
                              f"validation, which writes the model; continue it with "
                              f"`python -m seq2seq.train --out {model_dir} --resume`")
    raise CheckpointError(f"{missing}; training was stopped before the first save; train again (without --resume)")


def find_training_state(run_dir: str | Path) -> Path | None:
    """The newest complete ``last`` directory (``last.old`` if a swap was interrupted), or None."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / LAST_DIR, run_dir / f"{LAST_DIR}.old"):
        if (candidate / "state.json").is_file():
            return candidate
    return None
