"""hf:ORG/NAME models: loading from a Hugging Face cache laid out as huggingface_hub lays it out (offline), the
pushed file list and the model card."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, SUBPROCESS_ENV
from support.hub_cache import add_snapshot, model_files

pytest.importorskip("huggingface_hub")

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty HF cache used offline by this process (huggingface_hub reads its settings at import)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def other_model_dir(tiny_model_dir, tmp_path) -> Path:
    """The tiny model with other (random) weights of the same shapes: translations that differ."""
    import torch
    from safetensors.torch import load_file, save_file

    out = tmp_path / "other"
    shutil.copytree(tiny_model_dir, out, ignore=shutil.ignore_patterns("last"))
    weights = load_file(out / "model.safetensors")
    generator = torch.Generator().manual_seed(1)
    save_file({k: torch.randn(v.shape, generator=generator) for k, v in weights.items()}, out / "model.safetensors")
    return out


SENTENCES = ["a man is riding a bike .", "two dogs play in the snow ."]


def test_load_from_the_cache_offline_with_a_revision_pin(tiny_model_dir, other_model_dir, offline_cache):
    from seq2seq.translator import Translator

    add_snapshot(offline_cache, "org/tiny", COMMIT_A, model_files(tiny_model_dir), ref="main")
    add_snapshot(offline_cache, "org/tiny", COMMIT_B, model_files(other_model_dir), ref="v2")
    local = Translator.load(tiny_model_dir, device="cpu").translate(SENTENCES, beam_size=1)
    other = Translator.load(other_model_dir, device="cpu").translate(SENTENCES, beam_size=1)
    assert local != other
    assert Translator.load("hf:org/tiny", device="cpu").translate(SENTENCES, beam_size=1) == local
    assert Translator.load(f"hf:org/tiny@{COMMIT_A}", device="cpu").translate(SENTENCES, beam_size=1) == local
    assert Translator.load("hf:org/tiny@v2", device="cpu").translate(SENTENCES, beam_size=1) == other


def test_a_hub_model_gets_the_local_checks(tiny_model_dir, tmp_path, offline_cache):
    """A snapshot whose weights do not fit its config is refused before a model is built (no pickle involved)."""
    import torch
    from safetensors.torch import load_file, save_file

    from seq2seq.translator import Translator
    from seq2seq.checkpoint import CheckpointError

    weights = load_file(tiny_model_dir / "model.safetensors")
    name = "decoder.output_layer.weight"
    weights[name] = torch.zeros(weights[name].size(0) + 1, weights[name].size(1))
    save_file(weights, tmp_path / "model.safetensors")
    add_snapshot(offline_cache, "org/bad", COMMIT_A,
                 {**model_files(tiny_model_dir), "model.safetensors": tmp_path / "model.safetensors"}, ref="main")
    with pytest.raises(CheckpointError, match=name):
        Translator.load("hf:org/bad", device="cpu")
    with pytest.raises(CheckpointError, match=r"not \(completely\) in the Hugging Face cache.*HF_HUB_OFFLINE"):
        Translator.load("hf:org/absent", device="cpu")
    with pytest.raises(CheckpointError, match="hf:ORG/NAME"):
        Translator.load("hf:no-slash", device="cpu")


def test_translate_command_reads_hf_hub_offline_and_the_cache_from_the_environment(tiny_model_dir, tmp_path):
    add_snapshot(tmp_path / "hf", "org/tiny", COMMIT_A, model_files(tiny_model_dir), ref="main")
    command = [sys.executable, "-m", "seq2seq.translate", "--device", "cpu", "--beam-size", "1", SENTENCES[0]]
    env = {**SUBPROCESS_ENV, "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    hub = subprocess.run([*command, "--model", "hf:org/tiny"], env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert hub.returncode == 0, hub.stderr
    from seq2seq.translator import Translator

    assert hub.stdout.strip() == Translator.load(tiny_model_dir, device="cpu").translate(SENTENCES[0], beam_size=1)


def test_push_operations_are_the_model_files_and_the_card(tiny_model_dir):
    from seq2seq.hub import push_operations

    assert (tiny_model_dir / "last").is_dir()  # the training state is there, and must not be pushed
    operations = push_operations(tiny_model_dir, "org/tiny")
    pushed = {op.path_in_repo: op.path_or_fileobj for op in operations}
    assert set(pushed) == {"config.yaml", "tokenizer.src.model", "tokenizer.tgt.model", "model.safetensors",
                           "results.json", "train_log.jsonl", "curves.png", "README.md"}
    for name, source in pushed.items():
        if name != "README.md":
            assert Path(source) == tiny_model_dir / name
    assert pushed["README.md"].decode("utf-8").startswith("---\n")


def test_exported_onnx_graphs_are_pushed_too(tiny_model_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from seq2seq.checkpoint import load_model_dir
    from seq2seq.hub import push_operations
    from seq2seq.onnx_export import export_onnx

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("last"))
    export_onnx(load_model_dir(model_dir)[1], model_dir / "onnx")
    pushed = {op.path_in_repo for op in push_operations(model_dir, "org/tiny")}
    assert {"onnx/encoder.onnx", "onnx/decoder_step.onnx"} <= pushed and "model.safetensors" in pushed


def test_push_refuses_a_damaged_directory(tiny_model_dir, tmp_path):
    from seq2seq.checkpoint import CheckpointError
    from seq2seq.hub import push_operations

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, damaged, ignore=shutil.ignore_patterns("last"))
    (damaged / "tokenizer.tgt.model").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.tgt.model"):
        push_operations(damaged, "org/tiny")
    with pytest.raises(CheckpointError, match="ORG/NAME"):
        push_operations(tiny_model_dir, "not a repo id")


def test_model_card_front_matter(tiny_model_dir):
    from seq2seq.config import load_config
    from seq2seq.model_card import model_card

    cfg = load_config(tiny_model_dir / "config.yaml")
    card = model_card(tiny_model_dir, cfg, "org/tiny", license="mit")
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["language"] == ["en", "de"]
    assert meta["pipeline_tag"] == "translation" and meta["library_name"] == "seq2seq"
    assert meta["datasets"] == [Path(cfg.data.path).name]  # the corpus directory's name (here tiny_corpus0)
    assert meta["license"] == "mit"
    results = json.loads((tiny_model_dir / "results.json").read_text())
    expected = {(split, metric, scores["beam_size"], scores[metric], scores[f"{metric}_signature"])
                for split, modes in results.items() for scores in modes.values() for metric in ("bleu", "chrf")}
    [index] = meta["model-index"]
    assert index["name"] == "tiny"
    found = set()
    for result in index["results"]:
        assert result["task"]["type"] == "translation"
        for metric in result["metrics"]:
            found.add((result["dataset"]["split"], metric["type"], metric["args"]["beam_size"], metric["value"],
                       metric["args"]["signature"]))
    assert found == expected and len(expected) == 4  # test_2016_flickr: greedy and beam, BLEU and chrF
    assert "model.decoder_hidden_size" not in body and "48 units" in body  # the config summary (decoder size)
    assert 'Translator.load("hf:org/tiny")' in body


def test_a_push_deletes_the_files_an_older_model_left(tiny_model_dir, other_model_dir, tmp_path, offline_cache,
                                                     monkeypatch):
    """Version 1 was pushed with its ONNX graphs; version 2 (other weights, not exported) is pushed over it. The
    commit deletes the old graphs (a push used to only add files, leaving graphs of other weights beside the new
    ones), keeps files no push writes, and the new snapshot loads as version 2 with no ONNX graphs in it."""
    pytest.importorskip("onnxruntime")
    import huggingface_hub

    from seq2seq.checkpoint import load_model_dir
    from seq2seq.hub import push_model_dir
    from seq2seq.onnx_export import export_onnx
    from seq2seq.translator import Translator

    first = tmp_path / "v1"
    shutil.copytree(tiny_model_dir, first, ignore=shutil.ignore_patterns("last"))
    export_onnx(load_model_dir(first)[1], first / "onnx")
    keep = tmp_path / "notes.txt"
    keep.write_text("the owner's own file\n")
    old_files = {**model_files(first), **{f"onnx/{p.name}": p for p in (first / "onnx").iterdir()},
                 "notes.txt": keep}
    add_snapshot(offline_cache, "org/tiny", COMMIT_A, old_files, ref="main")
    assert Translator.load("hf:org/tiny", device="cpu", backend="onnx").translate(SENTENCES[:1]) == \
        Translator.load(first, device="cpu").translate(SENTENCES[:1])

    commits = []

    class HubStandIn:  # the Hub's side of a push: the repository's files now, and the commit asked for
        def __init__(self, **kwargs):
            pass

        def create_repo(self, repo_id, **kwargs):
            pass

        def list_repo_files(self, repo_id, **kwargs):
            return sorted(old_files)

        def create_commit(self, repo_id, operations, **kwargs):
            commits.append(operations)
            return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{COMMIT_B}",
                                              commit_message="", commit_description="", oid=COMMIT_B)

    monkeypatch.setattr(huggingface_hub, "HfApi", HubStandIn)
    push_model_dir(other_model_dir, "org/tiny")
    [operations] = commits
    deleted = {op.path_in_repo for op in operations if isinstance(op, huggingface_hub.CommitOperationDelete)}
    assert deleted == {"onnx/encoder.onnx", "onnx/decoder_step.onnx", "onnx/exported_from.json"}
    files = {name: path for name, path in old_files.items() if name not in deleted}
    for op in operations:
        if isinstance(op, huggingface_hub.CommitOperationAdd):
            data = op.path_or_fileobj
            if isinstance(data, bytes):
                (tmp_path / "card.md").write_bytes(data)
                data = tmp_path / "card.md"
            files[op.path_in_repo] = Path(data)
    snapshot = add_snapshot(offline_cache, "org/tiny", COMMIT_B, files, ref="v2")
    assert not (snapshot / "onnx").exists() and (snapshot / "notes.txt").exists()
    with pytest.raises(ValueError, match="onnx/encoder.onnx is missing"):
        Translator.load("hf:org/tiny@v2", device="cpu", backend="onnx")
    assert Translator.load("hf:org/tiny@v2", device="cpu").translate(SENTENCES) == \
        Translator.load(other_model_dir, device="cpu").translate(SENTENCES)
