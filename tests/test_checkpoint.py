"""Model directories (seq2seq/checkpoint.py) under faults: a damaged or untrusted model directory is one clear
CheckpointError and never unpickles; a failed write (disk full) keeps the previous model loadable. The training
state in last/: test_saved_state.py."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
import yaml
from conftest import REPO_ROOT
from support.faults import ENOSPC, model_copy, snapshot

from seq2seq.translator import Translator
from seq2seq.checkpoint import CheckpointError, load_model_dir, save_model_dir


# ============================================================================ untrusted model directories
def _flip(offset: int):
    def mutate(d: Path) -> None:
        data = bytearray((d / "model.safetensors").read_bytes())
        data[offset] ^= 0xFF
        (d / "model.safetensors").write_bytes(bytes(data))
    return mutate


def _truncate(keep):
    def mutate(d: Path) -> None:
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: keep(len(data))])
    return mutate


def _rewrite_weights(change):
    def mutate(d: Path) -> None:
        state = safetensors.torch.load_file(str(d / "model.safetensors"))
        safetensors.torch.save_file(change(state), str(d / "model.safetensors"))
    return mutate


def _first_tensor_reshaped(state):
    name = next(iter(state))
    return {**state, name: torch.zeros(3, 3)}


def _edit_config(section: str, key: str, value):
    def mutate(d: Path) -> None:
        raw = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8"))
        raw[section][key] = value
        (d / "config.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return mutate


class _Exploit:
    """Unpickling this creates the directory ``path``: proof that a loader unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _pickle_as(name: str):
    def mutate(d: Path) -> None:
        (d / name).write_bytes(pickle.dumps({"weights": _Exploit(str(d / "PWNED"))}))
    return mutate


def _python_tag(d: Path) -> None:
    text = (d / "config.yaml").read_text(encoding="utf-8")
    (d / "config.yaml").write_text(
        text.replace("rnn_type: gru", f"rnn_type: !!python/object/apply:os.mkdir [{str(d / 'PWNED')!r}]"), encoding="utf-8")


MODEL_FAULTS = {
    # (mutation, file the error must name, another substring of the error)
    "weights_truncated_to_half": (_truncate(lambda n: n // 2), "model.safetensors", "truncated"),
    "weights_missing_last_byte": (_truncate(lambda n: n - 1), "model.safetensors", "truncated"),
    "weights_empty": (_truncate(lambda n: 0), "model.safetensors", "truncated"),
    "weights_header_length_flipped": (_flip(7), "model.safetensors", "safetensors"),
    "weights_header_json_flipped": (_flip(20), "model.safetensors", "safetensors"),
    "weights_tensor_of_the_wrong_shape": (_rewrite_weights(_first_tensor_reshaped), "model.safetensors", "shape"),
    "weights_tensor_missing": (_rewrite_weights(lambda s: dict(list(s.items())[1:])), "model.safetensors", "missing"),
    "weights_extra_tensor": (_rewrite_weights(lambda s: {**s, "evil": torch.zeros(1)}), "model.safetensors", "evil"),
    "weights_integer_dtype": (_rewrite_weights(lambda s: {k: v.long() for k, v in s.items()}), "model.safetensors",
                              "floating point"),
    "weights_nan": (_rewrite_weights(lambda s: {k: v * float("nan") for k, v in s.items()}), "model.safetensors", "NaN"),
    "weights_are_a_pickle": (_pickle_as("model.safetensors"), "model.safetensors", "safetensors"),
    "weights_missing": (lambda d: (d / "model.safetensors").unlink(), "model.safetensors", "missing"),
    "config_decoder_hidden_size_changed": (_edit_config("model", "decoder_hidden_size", 64), "model.safetensors",
                                           "config.yaml"),
    "config_rnn_type_changed": (_edit_config("model", "rnn_type", "lstm"), "model.safetensors", "config.yaml"),
    "config_huge_model": (_edit_config("model", "decoder_hidden_size", 10**11), "config.yaml", "cannot build"),
    "config_unknown_key": (_edit_config("model", "evil", 1), "config.yaml", "model.evil"),
    "config_python_tag": (_python_tag, "config.yaml", "python/object"),
    "config_not_utf8": (lambda d: (d / "config.yaml").write_bytes(b"\xff\xfe model: {"), "config.yaml", "YAML"),
    "config_missing": (lambda d: (d / "config.yaml").unlink(), "config.yaml", "missing"),
    "tokenizer_missing": (lambda d: (d / "tokenizer.tgt.model").unlink(), "tokenizer.tgt.model", "missing"),
    "tokenizer_random_bytes": (lambda d: (d / "tokenizer.src.model").write_bytes(os.urandom(5000)),
                               "tokenizer.src.model", "SentencePiece"),
    "tokenizer_truncated": (lambda d: (d / "tokenizer.tgt.model").write_bytes((d / "tokenizer.tgt.model").read_bytes()[:999]),
                            "tokenizer.tgt.model", "SentencePiece"),
    "tokenizer_is_a_pickle": (_pickle_as("tokenizer.src.model"), "tokenizer.src.model", "SentencePiece"),
}


@pytest.mark.parametrize("name", list(MODEL_FAULTS))
def test_damaged_model_directory_is_one_clear_error(tiny_model_dir, tmp_path, name):
    mutate, file_name, detail = MODEL_FAULTS[name]
    model_dir = model_copy(tiny_model_dir, tmp_path / "model")
    mutate(model_dir)
    started = time.perf_counter()
    with pytest.raises(CheckpointError) as caught:
        Translator.load(model_dir, device="cpu")
    message = str(caught.value)
    assert str(model_dir / file_name) in message, message
    assert detail in message, message
    assert time.perf_counter() - started < 30  # a config asking for a huge model fails without allocating it
    assert not (model_dir / "PWNED").exists(), "loading a model directory unpickled or ran a YAML python tag"


def test_the_library_never_unpickles():
    """No pickle-based loader anywhere in the package (weights: safetensors; config: YAML safe_load)."""
    for path in (REPO_ROOT / "seq2seq").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        for forbidden in ("torch.load(", "import pickle", "pickle.load", "yaml.load(", "unsafe_load", "full_load",
                          "weights_only=False", "yaml.Loader", "UnsafeLoader", "FullLoader", "numpy.load", "np.load("):
            assert forbidden not in source, f"{path.name} uses {forbidden}"


# ============================================================================ failed writes (disk full)
def _safetensors_disk_full(*args, **kwargs):
    raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def _oserror_disk_full(*args, **kwargs):
    raise ENOSPC


@pytest.mark.parametrize("failure", ["safetensors", "oserror"])
def test_disk_full_while_saving_a_model_keeps_the_previous_one(tiny_model_dir, tmp_path, monkeypatch, failure):
    model_dir = model_copy(tiny_model_dir, tmp_path / "model")
    cfg, model, src_tok, tgt_tok = load_model_dir(model_dir)
    before = snapshot(model_dir)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)  # different weights, so that a half-written file would show
    monkeypatch.setattr(safetensors.torch, "save_file",
                        _safetensors_disk_full if failure == "safetensors" else _oserror_disk_full)
    with pytest.raises(CheckpointError, match="No space left on device") as caught:
        save_model_dir(model_dir, cfg, model, src_tok, tgt_tok)
    assert str(model_dir / "model.safetensors") in str(caught.value)
    monkeypatch.undo()
    assert snapshot(model_dir) == before  # nothing changed, no temporary files left behind
    Translator.load(model_dir, device="cpu")


def test_skipping_init_while_loading_leaves_other_threads_initializing():
    """A model loaded from weights skips torch.nn.init (its parameters are overwritten next), in the loading thread
    only: another thread building a model meanwhile still gets random weights."""
    import threading

    import torch

    from seq2seq.checkpoint import _without_init

    inside, other = torch.zeros(4), torch.zeros(4)
    with _without_init():
        torch.nn.init.uniform_(inside, 1.0, 2.0)
        worker = threading.Thread(target=torch.nn.init.uniform_, args=(other, 1.0, 2.0))
        worker.start()
        worker.join()
    after = torch.nn.init.uniform_(torch.zeros(4), 1.0, 2.0)
    assert torch.equal(inside, torch.zeros(4))
    assert bool(((other >= 1) & (other <= 2)).all()) and bool(((after >= 1) & (after <= 2)).all())
