"""Speed of training and decoding on the reference workload (Multi30k en->de, configs/multi30k_en_de.yaml).

    python scripts/benchmark.py                              # full run: 50 training steps, 1000 test sentences
    python scripts/benchmark.py --quick                      # tiny run (CI): a few steps, 64 sentences
    python scripts/benchmark.py --model runs/multi30k_en_de  # decode with a trained model
    python scripts/benchmark.py --compare fp32,bf16,auto     # variants in one process, ratios to the first
    python scripts/benchmark.py --peers joeynmt,opennmt --peer-seconds 300   # and both peers trained here after
    python scripts/benchmark.py --joeynmt 150                # short for --peers joeynmt --peer-seconds 150
    python scripts/benchmark.py --model runs/multi30k_en_de --skip-train --peers opennmt --peer-seconds 1200 \
        --peer-decode                                        # OpenNMT-py trained 20 min, both models decode
    python scripts/benchmark.py --model runs/multi30k_en_de --skip-train --peers opennmt --peer-decode \
        --peer-model ~/.cache/seq2seq-peers/opennmt-run/model_step_900.pt   # its model kept from such a run
    python scripts/benchmark.py --model runs/multi30k_en_de --compare fp32,bf16 --peers marian --peer-seconds 1200 \
        --peer-decode --whole-process                        # Marian trained 20 min; both decode, as processes too
    python scripts/benchmark.py --compare "fused:model.rnn_impl=fused,textbook:model.rnn_impl=reference"

Measured in one process: the GEMM peak of this machine (fp32 and bf16 ``torch.matmul``), training throughput
(the per-step work of ``seq2seq.train``: fetch batch, autocast forward, loss / tokens backward, clip, Adam step)
with achieved GFLOP/s from an analytic FLOP count (cross-checked with ``FlopCounterMode``), and greedy and beam
decoding of the first test split (throughput at ``--batch-size`` and batch-1 latency, with sacreBLEU); with
``--peers``, each named peer (JoeyNMT 2.3.0, OpenNMT-py 3.5.1, Marian 1.12.42) trained after that by its harness in
../shared/peers/, one after another, and our training speed over each (seq2seq/bench/peers.py says how the
toolkits' batch sizes map); with ``--peer-decode`` also each peer's model decoding the same sentences
(seq2seq/bench/peer_decoding.py); with ``--whole-process`` ours decoding them as new processes of
``python -m seq2seq.translate``, torch and onnxruntime (seq2seq/bench/whole_process.py). Prints tables and writes
everything to ``--json``. Without ``--model`` the decoded model is the one just benchmarked (a
few training steps: its outputs are long and poor, so read decoding figures per generated token).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import datasets
import torch

from seq2seq.precision import resolve_device
from seq2seq.bench.decoding_speed import bench_decoding, decoding_translator
from seq2seq.bench.joeynmt import JOEYNMT
from seq2seq.bench.machine import PEAK_DTYPES, cpu_name, gemm_peak
from seq2seq.bench.marian import MARIAN
from seq2seq.bench.opennmt import OPENNMT
from seq2seq.bench.peer_decoding import decode_with_peer, decoding_ratios
from seq2seq.bench.peers import (PeerError, PeerToolkit, harness_script, measure_peers, parse_peers, peer_dir,
                                 peer_ratios)
from seq2seq.bench.profiling import profile
from seq2seq.bench.report import compare_ratios, print_peer_decoding, print_peers, print_variant
from seq2seq.bench.training_speed import TrainingBench, bench_training
from seq2seq.bench.variants import DTYPES, Variant, parse_variants
from seq2seq.bench.whole_process import decode_whole_process, print_whole_process
from seq2seq.bench.workload import Workload, load_workload
from seq2seq.checkpoint import CONFIG_FILE
from seq2seq.config import Config, ConfigError, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "multi30k"
PEERS_DIR = REPO_ROOT.parent / "shared" / "peers"
PEERS = {toolkit.name: toolkit for toolkit in (JOEYNMT, OPENNMT, MARIAN)}
QUICK = {"steps": 3, "warmup": 1, "rounds": 1, "decode_sentences": 64, "latency_sentences": 10}
#: quick mode also shrinks the work (each unless --set gives that key): small vocabularies, smaller batches
QUICK_OVERRIDES = ["tokenizer.vocab_size=1000", "tokenizer.input_sentence_size=10000", "train.max_tokens=1024"]
FULL = {"steps": 50, "warmup": 5, "rounds": 5, "decode_sentences": 0, "latency_sentences": 100}


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python scripts/benchmark.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: configs/multi30k_en_de.yaml, or MODEL/config.yaml "
                        "with --model)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="corpus (default: ../shared/data/multi30k)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                        help="autocast compute dtype for training and decoding (the loss stays fp32)")
    parser.add_argument("--steps", type=int, help=f"timed training steps (default {FULL['steps']})")
    parser.add_argument("--warmup", type=int, help=f"untimed training steps first (default {FULL['warmup']})")
    parser.add_argument("--rounds", type=int, help="turns the timed steps are split into, alternating between the "
                        f"--compare variants (default {FULL['rounds']})")
    parser.add_argument("--model", type=Path, help="decode with this trained model directory (default: the model "
                        "just benchmarked, after its training steps)")
    parser.add_argument("--decode-sentences", type=int, help="test sentences to decode (default: all)")
    parser.add_argument("--latency-sentences", type=int, help=f"batch-1 latency sentences (default "
                        f"{FULL['latency_sentences']})")
    parser.add_argument("--batch-size", type=int, default=64, help="decoding batch size (default 64)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--compare", help="variants run in this process, ratios to the first: fp32,bf16 or "
                        "'name:section.key=value;section.key=value,...' (a variant may set dtype=bf16)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override for every variant (repeatable)")
    parser.add_argument("--json", default="bench.json", help="write all figures here (default bench.json)")
    parser.add_argument("--quick", action="store_true", help=f"tiny run for CI: {QUICK['steps']} steps, "
                        f"{QUICK['decode_sentences']} decode / {QUICK['latency_sentences']} latency sentences, "
                        f"and {' '.join(QUICK_OVERRIDES)}")
    parser.add_argument("--peers", metavar="NAMES", help="also train these peers on this machine after ours, one "
                        f"after another, each by its harness ../shared/peers/NAME/speed.sh (marian: run.sh) "
                        f"({', '.join(PEERS)}; comma-separated), and print our training speed over theirs")
    parser.add_argument("--peer-seconds", type=int, metavar="SECONDS", help="training time of each peer (default: "
                        "its harness's own, " + ", ".join(f"{t.name} {t.default_seconds} s" for t in PEERS.values())
                        + ")")
    parser.add_argument("--peers-dir", type=Path, default=PEERS_DIR, help="where the peers' harnesses are, one "
                        "folder per peer holding its harness (default: ../shared/peers)")
    parser.add_argument("--peer-decode", action="store_true", help="each peer whose harness keeps its model "
                        "(OpenNMT-py, Marian) then decodes the sentences ours decoded, greedy and beam 5, timed (its "
                        "own timer and its whole process) and scored")
    parser.add_argument("--peer-model", type=Path, metavar="PATH", help="with --peer-decode and one peer: decode "
                        "with this model, which that peer's harness trained before (e.g. a kept "
                        "$PEER_DIR/opennmt-run/model_step_N.pt or $PEER_DIR/marian-run/model.npz), instead of "
                        "training the peer in this run")
    parser.add_argument("--whole-process", action="store_true", help="with --model: also time ours decoding as "
                        "whole processes of python -m seq2seq.translate (greedy and beam 5, at --batch-size and at "
                        "batch 1), with torch and, where MODEL/onnx/ exists, with onnxruntime")
    parser.add_argument("--joeynmt", type=int, default=0, metavar="SECONDS",
                        help="short for --peers joeynmt --peer-seconds SECONDS")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="also print torch.profiler's top ROWS ops for one training step and one beam batch")
    return parser


def resolve_sizes(args: argparse.Namespace) -> None:
    """Fill the unset sizes from the quick or full defaults."""
    defaults = QUICK if args.quick else FULL
    for name in ("steps", "warmup", "rounds", "decode_sentences", "latency_sentences"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        raise ConfigError("--steps and --rounds must be >= 1 and --warmup >= 0")


def resolve_peers(args: argparse.Namespace) -> list[PeerToolkit]:
    """``--peers`` and ``--peer-seconds`` (``--joeynmt SECONDS`` is short for both), each named peer's harness checked
    to exist now rather than after the training runs."""
    if args.joeynmt:
        if (args.peers and args.peers.strip() != "joeynmt") or args.peer_seconds not in (None, args.joeynmt):
            raise ConfigError("--joeynmt SECONDS is short for --peers joeynmt --peer-seconds SECONDS: give one or the "
                              "other")
        args.peers, args.peer_seconds = "joeynmt", args.joeynmt
    if args.peer_seconds is not None and (args.peer_seconds < 1 or not args.peers):
        raise ConfigError("--peer-seconds must be >= 1 and goes with --peers NAMES")
    if args.whole_process and (args.model is None or args.skip_decode):
        raise ConfigError("--whole-process times a trained model's decoding: it needs --model DIR and no --skip-decode")
    if args.peer_decode and (not args.peers or args.skip_decode):
        raise ConfigError("--peer-decode compares the peers' decoding with ours: it needs --peers NAMES and no "
                          "--skip-decode")
    toolkits = parse_peers(args.peers, PEERS) if args.peers else []
    if args.peer_model is not None:
        if not args.peer_decode or len(toolkits) != 1 or toolkits[0].decoder is None or args.peer_seconds is not None:
            raise ConfigError("--peer-model PATH decodes with a model one peer trained before: it goes with "
                              "--peer-decode and one peer that can decode (--peers opennmt or --peers marian), "
                              "without --peer-seconds")
        if not args.peer_model.is_file():
            raise ConfigError(f"--peer-model {args.peer_model}: no such file (a checkpoint the peer's harness kept, "
                              f"e.g. {peer_dir() / 'opennmt-run'}/model_step_N.pt or "
                              f"{peer_dir() / 'marian-run'}/model.npz)")
        return toolkits
    for toolkit in toolkits:
        harness_script(args.peers_dir, toolkit)
    return toolkits


def variant_config(args: argparse.Namespace, variant: Variant) -> Config:
    overrides = [f"data.path={args.data}"]
    given = {o.split("=", 1)[0].strip() for o in args.overrides + variant.overrides}
    if args.quick:
        for text in QUICK_OVERRIDES:
            key = text.split("=", 1)[0]
            if key not in given and not (args.model and key.startswith("tokenizer.")):
                overrides.append(text)
    config = args.config or (args.model / CONFIG_FILE if args.model else REPO_ROOT / "configs" / "multi30k_en_de.yaml")
    dtypes = [f"train.dtype={variant.dtype}", f"decode.dtype={variant.dtype}"]
    return load_config(config, overrides + args.overrides + variant.overrides + dtypes)


def variant_workload(args: argparse.Namespace, cfg: Config, workloads: dict[str, Workload]) -> Workload:
    """The workload for a variant's data and tokenizer settings (shared by variants that agree on them)."""
    key = json.dumps([dataclasses.asdict(cfg.data), dataclasses.asdict(cfg.tokenizer)], sort_keys=True)
    if key not in workloads:
        workloads[key] = load_workload(cfg, args.model)
    return workloads[key]


def run_variants(args: argparse.Namespace, variants: list[Variant], device: torch.device, peaks: dict[str, float],
                 workloads: dict[str, Workload]) -> list[dict[str, Any]]:
    """Training figures (all variants timed in alternating rounds), then each variant's decoding figures."""
    configs = [variant_config(args, variant) for variant in variants]
    works = [variant_workload(args, cfg, workloads) for cfg in configs]
    benches: list[TrainingBench | None] = [None] * len(variants)
    if not args.skip_train:
        for index, (variant, cfg, work) in enumerate(zip(variants, configs, works)):
            print(f"[{variant.name}] building and warming up ...", file=sys.stderr, flush=True)
            benches[index] = TrainingBench(cfg, work, device, args.warmup)
        print(f"timing {args.steps} training steps per variant in {args.rounds} alternating round(s) ...",
              file=sys.stderr, flush=True)
        bench_training([b for b in benches if b is not None], args.steps, args.rounds)
    results = []
    for variant, cfg, work, bench in zip(variants, configs, works, benches):
        result: dict[str, Any] = {"name": variant.name, "dtype": variant.dtype, "overrides": variant.overrides,
                                  "vocab": [work.src_tok.vocab_size, work.tgt_tok.vocab_size], "config": cfg.to_dict()}
        trained = bench.model if bench is not None else None
        if bench is not None:
            result["train"] = bench.figures(peaks)
            result["parameters"] = trained.num_parameters()
        if not args.skip_decode:
            print(f"[{variant.name}] decoding ...", file=sys.stderr, flush=True)
            translator = decoding_translator(cfg, work, device, args.model, trained)
            sources = work.test_sources[: args.decode_sentences or None]
            references = work.test_references[: len(sources)]
            result["decode"] = bench_decoding(translator, sources, args.batch_size, args.latency_sentences, references)
            result["decode"]["split"] = work.test_split
            result["decode"]["trained_model"] = args.model is not None
            result["decode"]["model"] = (str(args.model) if args.model else
                                         f"the benchmarked one after {args.warmup + args.steps} training steps"
                                         if trained is not None else "untrained (fresh initialisation)")
        if args.profile:
            model = trained or decoding_translator(cfg, work, device, args.model, None).model
            profile(cfg, work, model, device, work.test_sources, args.profile)
        results.append(result)
    return results


def peer_decoding(args: argparse.Namespace, toolkit: PeerToolkit, model: Path, variants: list[dict[str, Any]],
                  work: Workload) -> dict[str, Any]:
    """The peer's model decoding the test sentences ours decoded, and each variant's decoding over it."""
    sources = work.test_sources[: args.decode_sentences or None]
    print(f"[{toolkit.name}] decoding {len(sources)} sentences with {model} ...", file=sys.stderr, flush=True)
    figures = decode_with_peer(toolkit.decoder, model, sources, work.test_references[: len(sources)],
                               args.batch_size, args.latency_sentences, torch.get_num_threads())
    figures["ratios"] = {v["name"]: decoding_ratios(v["decode"], figures) for v in variants if v.get("decode")}
    return figures


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    datasets.disable_progress_bars()
    try:
        resolve_sizes(args)
        variants = parse_variants(args.compare, args.dtype)
        device = resolve_device(args.device)
        base_cfg = variant_config(args, variants[0])
        toolkits = resolve_peers(args)
    except (ConfigError, ValueError, PeerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if device.type == "cpu":
        torch.set_num_threads(base_cfg.train.threads or os.cpu_count() or 1)
    size, reps = (1024, 3) if args.quick else ((4096, 10) if device.type == "cuda" else (2048, 5))
    peaks = {name: gemm_peak(device, dtype, size, reps) for name, dtype in PEAK_DTYPES.items()}
    report: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "quick": args.quick,
        "gemm": {"size": size, "peak_gflops": peaks},
    }
    print(f"seq2seq benchmark: torch {report['torch']}, {device} ({report['device_name']}), "
          f"{report['threads']} threads, {report['timestamp']}")
    print(f"GEMM peak ({size}x{size} matmul, best of {reps}): fp32 {peaks['fp32']:.1f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.1f} GFLOP/s")
    workloads: dict[str, Workload] = {}
    try:
        report["variants"] = run_variants(args, variants, device, peaks, workloads)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for variant in report["variants"]:
        print_variant(variant, peaks)
    if len(variants) > 1:
        report["ratios"] = compare_ratios(report["variants"])
    status = 0
    if toolkits:
        report["peers"] = {}
        try:
            if args.peer_model:  # trained before this run: only decoded
                toolkit = toolkits[0]
                report["peers"][toolkit.name] = {
                    "toolkit": toolkit.title, "seconds": None, "model": str(args.peer_model),
                    "decode": peer_decoding(args, toolkit, args.peer_model, report["variants"],
                                            variant_workload(args, base_cfg, workloads))}
            trained = [] if args.peer_model else measure_peers(toolkits, args.peer_seconds, base_cfg, args.peers_dir,
                                                               peaks["fp32"], keep_models=args.peer_decode)
            for name, peer in trained:
                report["peers"][name] = dict(peer, ratios=peer_ratios(peer, report["variants"]))
                if args.peer_decode and peer["model"]:
                    report["peers"][name]["decode"] = peer_decoding(args, PEERS[name], Path(peer["model"]),
                                                                    report["variants"], variant_workload(args, base_cfg, workloads))
        except PeerError as err:  # the figures measured so far are still written
            print(f"error: {err}", file=sys.stderr)
            status = 2
        if report["peers"]:
            if not args.peer_model:
                print_peers(report["peers"], peaks)
            print_peer_decoding(report["peers"], report["variants"])
    if args.whole_process:  # after the peers' decoding, so that the two are timed side by side
        work = variant_workload(args, base_cfg, workloads)
        sources = work.test_sources[: args.decode_sentences or None]
        print(f"[ours] decoding {len(sources)} sentences as whole processes ...", file=sys.stderr, flush=True)
        report["whole_process"] = decode_whole_process(args.model, sources, work.test_references[: len(sources)],
                                                       args.batch_size, args.latency_sentences, torch.get_num_threads())
        print_whole_process(report["whole_process"], report.get("peers", {}))
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
