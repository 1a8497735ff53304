"""``--whole-process``: our decoding timed as a user of the command line meets it, a new process of
``python -m seq2seq.translate`` per run (importing the toolkit, loading the model, decoding the file from stdin,
writing stdout), with each backend: torch, and onnxruntime where the model has its graphs (``MODEL/onnx/``, written by
``python -m seq2seq.onnx_export``). Greedy and beam 5 at the batch size, and at batch 1 over the first sentences,
the figures the peers' decoders are timed by too (:func:`~seq2seq.bench.peer_decoding.decode_with_peer`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from seq2seq.bench.peer_decoding import SEARCHES
from seq2seq.metrics import bleu_and_chrf


def backends(model: Path) -> list[str]:
    """torch always; onnx where the model's graphs are exported."""
    return ["torch"] + (["onnx"] if (model / "onnx").is_dir() else [])


def translate_process(model: Path, lines: list[str], backend: str, beam: int, batch_size: int,
                      threads: int) -> tuple[list[str], float]:
    """One ``python -m seq2seq.translate`` process over ``lines`` on stdin: its output lines and wall seconds."""
    command = [sys.executable, "-m", "seq2seq.translate", "--model", str(model), "--backend", backend,
               "--beam-size", str(beam), "--batch-size", str(batch_size), "--threads", str(threads), "--no-progress"]
    start = time.perf_counter()
    done = subprocess.run(command, input="\n".join(lines) + "\n", capture_output=True, text=True)
    seconds = time.perf_counter() - start
    outputs = done.stdout.splitlines()
    if done.returncode != 0 or len(outputs) != len(lines):
        said = " | ".join((done.stderr.strip() or "(nothing)").splitlines()[-4:])
        raise RuntimeError(f"python -m seq2seq.translate --backend {backend} failed (exit {done.returncode}, "
                           f"{len(outputs)} lines for {len(lines)}): {said}")
    return outputs, seconds


def decode_whole_process(model: Path, sources: list[str], references: list[str], batch_size: int,
                         latency_sentences: int, threads: int) -> dict[str, dict]:
    """Per backend and search: sentences/s of the whole process at ``batch_size`` (and its BLEU), and the mean
    milliseconds per sentence of a process translating the first ``latency_sentences`` one at a time."""
    figures: dict[str, dict] = {}
    count = min(latency_sentences, len(sources))
    for backend in backends(model):
        figures[backend] = {}
        for name, beam in SEARCHES:
            outputs, seconds = translate_process(model, sources, backend, beam, batch_size, threads)
            row = {"beam_size": beam, "seconds": seconds, "sentences_per_s": len(sources) / seconds,
                   "bleu": bleu_and_chrf(outputs, references)["bleu"], "latency_sentences": count,
                   "latency_mean_ms": None}
            if count:
                _, single = translate_process(model, sources[:count], backend, beam, 1, threads)
                row["latency_mean_ms"] = single / count * 1000
            figures[backend][name] = row
    return figures


def peer_process_figures(peer: dict) -> dict[str, dict]:
    """A decoded peer's whole-process figures in :func:`decode_whole_process`'s layout (one backend's)."""
    return {name: {"beam_size": peer["decode"][name]["beam_size"], "bleu": peer["decode"][name].get("bleu"),
                   "sentences_per_s": peer["decode"][name]["process_sentences_per_s"],
                   "latency_mean_ms": peer["decode"][name].get("process_latency_mean_ms")} for name, _ in SEARCHES}


def print_whole_process(ours: dict[str, dict], peers: dict[str, dict]) -> None:
    """Ours (each backend) and each decoded peer as whole processes, side by side."""
    decoded = {peer["toolkit"]: peer_process_figures(peer) for peer in peers.values() if peer.get("decode")}
    print("\ndecoding as whole processes (start to exit: the toolkit and the model loaded, the file decoded)")
    print(f"  {'':26} {'search':8} {'sent/s':>9} {'mean ms b=1':>11} {'BLEU':>6}")
    rows = [(f"ours, {backend}", searches) for backend, searches in ours.items()] + list(decoded.items())
    for label, searches in rows:
        for name, _ in SEARCHES:
            d = searches[name]
            latency = f"{d['latency_mean_ms']:11.1f}" if d.get("latency_mean_ms") else f"{'-':>11}"
            bleu = f"{d['bleu']:6.2f}" if d.get("bleu") is not None else f"{'-':>6}"
            search = "greedy" if name == "greedy" else f"beam {d['beam_size']}"
            print(f"  {label:26} {search:8} {d['sentences_per_s']:9.1f} {latency} {bleu}")
    for toolkit, theirs in decoded.items():
        for backend, searches in ours.items():
            print(f"  ours ({backend}) over {toolkit}, whole process: " + "; ".join(
                f"{name} sentences/s x{searches[name]['sentences_per_s'] / theirs[name]['sentences_per_s']:.2f}"
                for name, _ in SEARCHES))
