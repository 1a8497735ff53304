"""Model directories on the Hugging Face Hub: ``hf:ORG/NAME[@REVISION]`` to load, and what a push uploads.

Loading (``Translator.load("hf:ORG/NAME")``, ``--model hf:ORG/NAME``) downloads only the files of a model
directory with ``huggingface_hub.snapshot_download`` into the user's Hugging Face cache (``HF_HOME`` /
``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` uses that cache without the network); the snapshot is then loaded by
:func:`seq2seq.checkpoint.load_model_dir` like any local directory (YAML, SentencePiece and safetensors, names and
shapes checked before anything is built: nothing from the Hub is unpickled or executed). A revision (branch, tag or
commit) pins the version: ``hf:ORG/NAME@v1.0``.

Pushing (``python -m seq2seq.push``) uploads the model directory without its training state (``last/``) and with
a generated model card (:mod:`seq2seq.model_card`) as ``README.md``, in one commit that also deletes the files an
older push left and this one does not write (so no stale ONNX graphs stay beside new weights); :func:`push_operations` builds
that commit's file list without the network.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from seq2seq.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, load_model_dir
from seq2seq.model_card import DISTILLATION_FILE, RESULTS_FILE, model_card
from seq2seq.tokenizer import SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE

HUB_PREFIX = "hf:"
#: what a model directory needs (downloaded, and required to push)
MODEL_FILES = (CONFIG_FILE, SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE, WEIGHTS_FILE)
#: pushed too when present: the test scores, the training curves, the ONNX graphs (python -m seq2seq.onnx_export),
#: the confidence calibration (python -m seq2seq.calibrate)
EXTRA_FILES = (RESULTS_FILE, "train_log.jsonl", "curves.png", "onnx/encoder.onnx", "onnx/decoder_step.onnx",
               "onnx/exported_from.json", "confidence.json", DISTILLATION_FILE)
CARD_FILE = "README.md"


def written_by_a_push(name: str) -> bool:
    """Whether a file of a Hub repository is one a push of a model directory writes (so one an older model left)."""
    return name in MODEL_FILES or name in EXTRA_FILES or name == CARD_FILE or name.startswith("onnx/")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def is_hub_reference(location: str | Path) -> bool:
    return str(location).startswith(HUB_PREFIX)


def parse_hub_reference(reference: str) -> tuple[str, str | None]:
    """``hf:ORG/NAME[@REVISION]`` -> ``(ORG/NAME, REVISION or None)``; a malformed one raises CheckpointError."""
    body = str(reference)[len(HUB_PREFIX):]
    repo_id, _, revision = body.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or "@" in revision or (body.endswith("@") and not revision):
        raise CheckpointError(f"{reference!r} is not a Hub model reference: write hf:ORG/NAME or hf:ORG/NAME@REVISION "
                              "(a branch, tag or commit)")
    return repo_id, revision or None


def _hub():
    try:
        import huggingface_hub
    except ImportError as err:
        raise CheckpointError(f"hf: models need the huggingface_hub package ({err}); install the extra with "
                              "`pip install 'seq2seq[hub]'`") from None
    return huggingface_hub


def download_model_dir(reference: str) -> Path:
    """The local snapshot directory of ``hf:ORG/NAME[@REVISION]``, downloaded into the HF cache if needed."""
    repo_id, revision = parse_hub_reference(reference)
    hub = _hub()
    from huggingface_hub import constants
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        path = hub.snapshot_download(repo_id, revision=revision, allow_patterns=[*MODEL_FILES, *EXTRA_FILES, CARD_FILE],
                                     library_name="seq2seq")
    except RevisionNotFoundError:
        raise CheckpointError(f"{reference}: the Hub repository {repo_id} has no revision {revision!r} (give an "
                              "existing branch, tag or commit after @)") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{reference}: no Hub model repository {repo_id} (or it is private: log in with "
                              "`hf auth login` or set HF_TOKEN)") from None
    except LocalEntryNotFoundError as err:  # IncompleteSnapshotError too: a download that was cut short
        raise CheckpointError(f"{reference}: not (completely) in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                              "the Hub cannot be reached (HF_HUB_OFFLINE set, or no network); download it once online "
                              f"({type(err).__name__})") from None
    except HfHubHTTPError as err:
        raise CheckpointError(f"{reference}: the Hub answered {err}") from None
    return Path(path)


def resolve_model_dir(location: str | Path) -> Path:
    """A local model directory for ``location``: a path as it is, or the downloaded snapshot of an ``hf:`` one."""
    return download_model_dir(str(location)) if is_hub_reference(location) else Path(location)


def push_operations(model_dir: str | Path, repo_id: str, dataset: str | None = None,
                    license: str | None = None, existing: Iterable[str] = ()) -> list:
    """The operations one push commits: ``huggingface_hub.CommitOperationAdd`` for the model files, the extras
    present and the generated card as ``README.md`` (never ``last/``, the optimizer state, or anything else in the
    directory), and a ``CommitOperationDelete`` for each of the repository's ``existing`` files that an older push
    wrote and this one does not (the ONNX graphs of a model retrained since, say): the commit holds one model.

    The directory is loaded first with the same checks as any model (a damaged one is not pushed).
    """
    model_dir = Path(model_dir)
    if not _REPO_ID.fullmatch(repo_id):
        raise CheckpointError(f"{repo_id!r} is not a Hub repository id: write ORG/NAME")
    cfg, _, _, _ = load_model_dir(model_dir)
    hub = _hub()
    names = [*MODEL_FILES, *(name for name in EXTRA_FILES if (model_dir / name).is_file())]
    operations = [hub.CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(model_dir / name)) for name in names]
    card = model_card(model_dir, cfg, repo_id, dataset=dataset, license=license)
    operations.append(hub.CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode("utf-8")))
    written = {op.path_in_repo for op in operations}
    operations += [hub.CommitOperationDelete(path_in_repo=name) for name in sorted(set(existing))
                   if written_by_a_push(name) and name not in written]
    return operations


def push_model_dir(model_dir: str | Path, repo_id: str, private: bool = False, dataset: str | None = None,
                   license: str | None = None, token: str | None = None, message: str | None = None) -> str:
    """Create ``repo_id`` (if needed) and commit the model directory to it, deleting the files an older model left
    there (:func:`push_operations`); returns the commit's URL."""
    push_operations(model_dir, repo_id, dataset=dataset, license=license)  # checks the directory before the network
    api = _hub().HfApi(token=token, library_name="seq2seq")
    from huggingface_hub.utils import HfHubHTTPError

    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        existing = api.list_repo_files(repo_id, repo_type="model")
        operations = push_operations(model_dir, repo_id, dataset=dataset, license=license, existing=existing)
        commit = api.create_commit(repo_id, operations, repo_type="model",
                                   commit_message=message or f"Upload seq2seq model from {Path(model_dir).name}")
    except HfHubHTTPError as err:
        raise CheckpointError(f"pushing {model_dir} to {repo_id}: the Hub answered {err} (log in with "
                              "`hf auth login` or set HF_TOKEN, with write access to the repository)") from None
    return commit.commit_url
