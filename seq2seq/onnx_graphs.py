"""The exported graphs in onnxruntime, with numpy arrays in and out: what the runtime without torch decodes with.

:func:`load_onnx_graphs` checks ``MODEL_DIR/onnx/`` (the graphs ``exported_from.json`` names, exported from the
model directory's weights) and opens two CPU sessions; :class:`OnnxGraphs` runs them: ``encode(src, src_lengths)``
-> the decoder's initial state and the attention memory by name, ``step(prev_tokens, state, memory)`` -> logits,
the new state, the attention weights. Nothing here imports torch: onnxruntime and numpy only (the torch searches
wrap these sessions in :class:`seq2seq.onnx_runtime.OnnxSeq2Seq`; the numpy searches of
:mod:`seq2seq.decoding.numpy_search` call them directly). The names of the files and of the graphs' inputs and
outputs are defined here, once, for the exporter (:mod:`seq2seq.onnx_export`) too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

ENCODER_FILE = "encoder.onnx"
STEP_FILE = "decoder_step.onnx"
#: the digests tying the graphs to the weights they were exported from
DIGEST_FILE = "exported_from.json"
#: the memory's arrays, in the order the encoder graph returns them after the state
MEMORY_NAMES = ["values", "keys", "pad_mask"]


def state_names(rnn_type: str) -> list[str]:
    """The decoder state's arrays, in the order the graphs take and return them."""
    return ["hidden", "cell", "attn_vector"] if rnn_type == "lstm" else ["hidden", "attn_vector"]


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class OnnxGraphs:
    """``encoder.onnx`` and ``decoder_step.onnx`` in onnxruntime sessions; numpy in, numpy out.

    A state is a dict of the arrays named by :func:`state_names` (``hidden``/``cell`` (L, N, H), ``attn_vector``
    (N, A)); a memory a dict of ``values`` (N, S, M), ``keys`` (N, S, K), ``pad_mask`` (N, S) bool.
    """

    def __init__(self, encoder_session, step_session, rnn_type: str) -> None:
        self.encoder_session, self.step_session, self.rnn_type = encoder_session, step_session, rnn_type
        self.state_names = state_names(rnn_type)
        # the exporter drops inputs a graph does not read (attn_vector without input feeding)
        self.step_inputs = {node.name for node in step_session.get_inputs()}

    def encode(self, src: np.ndarray, src_lengths: np.ndarray) -> tuple[dict, dict]:
        """(B, S) int64 ids, (B,) lengths -> (initial state, memory) of B rows."""
        outputs = self.encoder_session.run(None, {"src": np.ascontiguousarray(src, dtype=np.int64),
                                                  "src_lengths": np.ascontiguousarray(src_lengths, dtype=np.int64)})
        named = dict(zip(self.state_names + MEMORY_NAMES, outputs))
        return {name: named[name] for name in self.state_names}, {name: named[name] for name in MEMORY_NAMES}

    def step(self, prev_tokens: np.ndarray, state: dict, memory: dict) -> tuple[np.ndarray, dict, np.ndarray]:
        """(N,) previous ids, N rows of state and memory -> logits (N, V), the new state, attn_weights (N, S)."""
        feeds = {"prev_tokens": np.ascontiguousarray(prev_tokens, dtype=np.int64), **state, **memory}
        feeds = {name: np.ascontiguousarray(value) for name, value in feeds.items() if name in self.step_inputs}
        logits, *new_state, attn_weights = self.step_session.run(None, feeds)
        return logits, dict(zip(self.state_names, new_state)), attn_weights

    def eval(self) -> "OnnxGraphs":
        """Always in inference mode (the graphs were exported from a model in eval mode)."""
        return self


def read_digests(onnx_dir: Path, again: str) -> dict:
    """``exported_from.json`` as a dict, after checking that the two graph files are the ones it names."""
    for name in (ENCODER_FILE, STEP_FILE, DIGEST_FILE):
        if not (onnx_dir / name).is_file():
            raise ValueError(f"{onnx_dir / name} is missing: {again}")
    try:
        recorded = json.loads((onnx_dir / DIGEST_FILE).read_text(encoding="utf-8"))
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{onnx_dir / DIGEST_FILE} is damaged ({err}): {again}") from None
    for name in (ENCODER_FILE, STEP_FILE):
        if file_digest(onnx_dir / name) != recorded.get(name):
            raise ValueError(f"{onnx_dir / name} is not the graph that was exported (damaged or replaced): {again}")
    return recorded


def export_again(onnx_dir: Path) -> str:
    return f"export the model again with `python -m seq2seq.onnx_export --model MODEL_DIR --out {onnx_dir}`"


def load_onnx_graphs(onnx_dir: str | Path, rnn_type: str, threads: int | None = None,
                     weights_sha256: str | None = None, weights_file: str | Path | None = None) -> OnnxGraphs:
    """Sessions for ``encoder.onnx`` and ``decoder_step.onnx`` in ``onnx_dir`` (CPU execution provider).

    The graphs must be the ones ``exported_from.json`` names (their SHA-256) and, when given, exported from the
    weights ``weights_sha256`` (:func:`seq2seq.onnx_export.weights_digest` of a loaded model) or from the file
    ``weights_file`` (its bytes' SHA-256, recorded by ``python -m seq2seq.onnx_export``): otherwise, and for graphs
    onnxruntime cannot read, one ValueError saying to export again.
    """
    try:
        import onnxruntime
    except ImportError as err:
        raise ValueError(f"the onnx backend needs onnxruntime ({err}); install the extra with "
                         "`pip install 'seq2seq[onnx]'` (or `pip install 'seq2seq[runtime]'` without torch)") from None
    onnx_dir = Path(onnx_dir)
    again = export_again(onnx_dir)
    recorded = read_digests(onnx_dir, again)
    if weights_sha256 is not None and recorded.get("weights_sha256") != weights_sha256:
        raise ValueError(f"the graphs in {onnx_dir} were exported from other weights than the model's "
                         f"model.safetensors (retrained or replaced since): {again}")
    if weights_file is not None and recorded.get("weights_file_sha256") != file_digest(Path(weights_file)):
        raise ValueError(f"the graphs in {onnx_dir} were exported from other weights than {weights_file} "
                         f"(retrained or replaced since, or exported before the file's digest was recorded): {again}")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    sessions = []
    for name in (ENCODER_FILE, STEP_FILE):
        try:
            sessions.append(onnxruntime.InferenceSession(str(onnx_dir / name), options,
                                                         providers=["CPUExecutionProvider"]))
        except Exception as err:  # onnxruntime's own InvalidProtobuf / Fail / InvalidGraph
            first_line = (str(err).strip().splitlines() or [""])[0][:200]
            raise ValueError(f"onnxruntime cannot load {onnx_dir / name} ({type(err).__name__}: {first_line}): "
                             f"{again}") from None
    return OnnxGraphs(sessions[0], sessions[1], rnn_type)


def records_weights_file(onnx_dir: str | Path) -> bool:
    """Whether ``exported_from.json`` records the weights file's digest (exports since the runtime without torch);
    older exports are checked against the loaded weights, which needs torch."""
    try:
        recorded = json.loads((Path(onnx_dir) / DIGEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(recorded, dict) and "weights_file_sha256" in recorded
