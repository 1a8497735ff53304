"""onnxruntime against torch on the CPU, side by side: translations compared line by line, batch-1 latency and
batch-64 throughput, greedy and beam 5 (the numbers of docs/onnx.md).

    PYTHONPATH=. python scripts/onnx_benchmark.py --model runs/ref3 \
        --src ../shared/data/multi30k/test_2016_flickr.en.gz [--threads 1] [--latency-sentences 100]

The model directory is only read: the graphs are exported into a temporary directory (or --onnx-dir). Both backends
run fp32 with the same number of threads (torch.set_num_threads / onnxruntime intra_op_num_threads); every timing
is preceded by a warm-up; the backends take turns (per sentence at batch 1, per run at batch 64) so that other
load on the machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seq2seq.translator import Translator  # noqa: E402
from seq2seq.bench.machine import cpu_name  # noqa: E402
from seq2seq.checkpoint import load_model_dir  # noqa: E402
from seq2seq.decoding.driver import pad_batch  # noqa: E402
from seq2seq.lines import read_lines  # noqa: E402
from seq2seq.onnx_export import export_onnx  # noqa: E402
from seq2seq.onnx_runtime import load_onnx_model  # noqa: E402
from seq2seq.tokenizer import BOS_ID  # noqa: E402

MODES = {"greedy": 1, "beam5": 5}


def translators(model_dir: Path, onnx_dir: Path, threads: int) -> dict[str, Translator]:
    torch.set_num_threads(threads)
    cfg, model, src_tok, tgt_tok = load_model_dir(model_dir)
    cfg.decode.dtype = "fp32"
    start = time.perf_counter()
    export_onnx(model, onnx_dir)
    print(f"exported {onnx_dir} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    cpu = torch.device("cpu")
    onnx_model = load_onnx_model(onnx_dir, cfg.model.rnn_type, threads)
    return {"torch": Translator(cfg, model, src_tok, tgt_tok, cpu), "onnxruntime": Translator(cfg, onnx_model, src_tok,
                                                                                              tgt_tok, cpu)}


def step_differences(backends: dict[str, Translator], lines: list[str], steps: int = 10) -> list[dict]:
    """The largest |onnxruntime - torch| over the encoder's memory and ``steps`` decoder steps (logits, attention,
    hidden state; each fed its own state and torch's argmax), at batch sizes 1, 8 and 64."""
    torch_model, onnx_model = backends["torch"].model, backends["onnxruntime"].model
    rows = []
    for batch in (1, 8, 64):
        src, lengths = pad_batch(backends["torch"].encode_sources(lines[:batch]), "cpu")
        with torch.no_grad():
            state, memory = torch_model.decoder.start(torch_model.encode(src, lengths))
        onnx_state, onnx_memory = onnx_model.decoder.start(onnx_model.encode(src, lengths))
        worst = max(float((getattr(onnx_memory, n) - getattr(memory, n)).abs().max()) for n in ("values", "keys"))
        tokens = torch.full((batch,), BOS_ID)
        for _ in range(steps):
            with torch.no_grad():
                logits, state, attn = torch_model.decoder.step(tokens, state, memory)
            onnx_logits, onnx_state, onnx_attn = onnx_model.decoder.step(tokens, onnx_state, onnx_memory)
            worst = max(worst, float((onnx_logits - logits).abs().max()), float((onnx_attn - attn).abs().max()),
                        float((onnx_state.hidden - state.hidden).abs().max()))
            tokens = logits.argmax(-1)
        rows.append({"batch": batch, "source_lengths": [int(lengths.min()), int(lengths.max())],
                     "max_abs_difference": worst})
    return rows


def latency_ms(backends: dict[str, Translator], lines: list[str], beam_size: int) -> dict[str, dict[str, float]]:
    """Per-sentence milliseconds of each backend, one sentence per call (batch 1); the backends take turns on
    each sentence, so that a busy machine slows both alike."""
    times: dict[str, list[float]] = {name: [] for name in backends}
    for translator in backends.values():
        translator.translate(lines[:5], beam_size=beam_size, batch_size=1)  # warm-up
    for line in lines:
        for name, translator in backends.items():
            start = time.perf_counter()
            translator.translate(line, beam_size=beam_size, batch_size=1)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: {"median_ms": round(statistics.median(t), 2), "mean_ms": round(statistics.fmean(t), 2)}
            for name, t in times.items()}


def throughput(backends: dict[str, Translator], lines: list[str], beam_size: int, rounds: int
               ) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Each backend's best sentences per second over all ``lines`` in batches of 64 (``rounds`` turns each,
    alternating), and its translations."""
    best: dict[str, float] = {name: 0.0 for name in backends}
    outputs: dict[str, list[str]] = {}
    for translator in backends.values():
        translator.translate(lines[:64], beam_size=beam_size, batch_size=64)  # warm-up
    for _ in range(rounds):
        for name, translator in backends.items():
            start = time.perf_counter()
            outputs[name] = translator.translate(lines, beam_size=beam_size, batch_size=64)
            best[name] = max(best[name], round(len(lines) / (time.perf_counter() - start), 1))
    return best, outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--src", required=True, help="source sentences (gzip is fine)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency-sentences", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="batch-64 runs per backend (the best counts)")
    parser.add_argument("--onnx-dir", help="where to export (default: a temporary directory)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    lines = list(read_lines(args.src))
    with tempfile.TemporaryDirectory() as tmp:
        backends = translators(Path(args.model), Path(args.onnx_dir or tmp), args.threads)
        report = {"cpu": cpu_name(), "threads": args.threads, "sentences": len(lines),
                  "step_differences": step_differences(backends, lines), "modes": {}}
        for mode, beam in MODES.items():
            speeds, outputs = throughput(backends, lines, beam, args.rounds)
            latencies = latency_ms(backends, lines[: args.latency_sentences], beam)
            row = {name: {"batch64_sentences_per_s": speeds[name], "batch1": latencies[name]} for name in backends}
            row["differing_lines"] = sum(a != b for a, b in zip(outputs["torch"], outputs["onnxruntime"]))
            report["modes"][mode] = row
    print(f"{report['cpu']}, {args.threads} thread(s), {len(lines)} sentences "
          f"(batch-1 latency on the first {args.latency_sentences})")
    for row in report["step_differences"]:
        print(f"batch {row['batch']:2d}, source lengths {row['source_lengths'][0]}-{row['source_lengths'][1]}: max "
              f"|onnxruntime - torch| over the encoder and 10 decoder steps = {row['max_abs_difference']:.1e}")
    print(f"{'mode':8} {'backend':12} {'batch-1 median ms':>18} {'batch-1 mean ms':>16} {'batch-64 sent/s':>16}")
    for mode, row in report["modes"].items():
        for name in backends:
            r = row[name]
            print(f"{mode:8} {name:12} {r['batch1']['median_ms']:>18} {r['batch1']['mean_ms']:>16} "
                  f"{r['batch64_sentences_per_s']:>16}")
        print(f"{mode:8} differing lines torch vs onnxruntime: {row['differing_lines']} / {len(lines)}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
