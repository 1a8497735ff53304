"""Recipe sweep under a fixed budget: train each variant for the same minutes (or steps), rank by validation BLEU.

    python scripts/sweep.py --variants configs/sweeps/cpu_20min.yaml --data ../shared/data/multi30k \
        --minutes 20 --out runs/sweep_cpu --table sweep_cpu.md
    python scripts/sweep.py --variants configs/sweeps/levers.yaml --data ../shared/data/multi30k \
        --steps 1000 --jobs 2 --out runs/sweep_levers_steps      # equal steps: what each variant learns per step

With ``--minutes`` every variant gets the same wall clock (quality per minute: a slower variant takes fewer
steps); with ``--steps`` the same number of updates (quality per step, whatever each costs), the learning rate
annealing to its end either way.

Each variant is a base config plus ``section.key=value`` overrides, trained by ``python -m seq2seq.train`` in its
own process (exactly what a user runs) into ``OUT/NAME`` with the test splits switched off: recipes are chosen on
the validation split only. A variant whose run already finished is read back, not trained again, so an
interrupted sweep continues where it stopped. The table (Markdown) and ``OUT/sweep.json`` list, per variant: best
validation BLEU (and chrF, step, minute, which weights), steps, epochs, training target tokens/s, parameters.

Variants file (YAML)::

    base: configs/multi30k_en_de.yaml          # relative to the repository root
    set: [train.scheduler=linear]             # overrides for every variant (optional)
    variants:
      - name: vocab2k
        set: [tokenizer.vocab_size=2000, model.dropout=0.3]

``--variant "name:key=value;key=value"`` adds variants on the command line. ``--jobs N`` trains N variants side by
side with ``train.threads`` = cores / N each (timings are then per share of the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Variant:
    name: str
    overrides: list[str] = field(default_factory=list)


def parse_inline(spec: str) -> Variant:
    """``name:section.key=value;section.key=value`` (overrides optional)."""
    name, _, rest = spec.partition(":")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SystemExit(f"error: --variant {spec!r}: the name must be letters, digits, '_', '-' or '.'")
    return Variant(name, [part.strip() for part in rest.split(";") if part.strip()])


def load_variants(path: Path) -> tuple[Path | None, list[str], list[Variant]]:
    """(base config, overrides for all, variants) from a variants YAML file."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    base = REPO_ROOT / raw["base"] if raw.get("base") else None
    variants = [Variant(str(v["name"]), [str(o) for o in v.get("set", [])]) for v in raw.get("variants", [])]
    return base, [str(o) for o in raw.get("set", [])], variants


def summarize(run_dir: Path) -> dict[str, Any] | None:
    """Figures of a finished run from its ``train_log.jsonl`` and ``train.log`` (None when it did not finish)."""
    log = run_dir / "train_log.jsonl"
    if not log.is_file():
        return None
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in records if r["type"] == "train"]
    valid = [r for r in records if r["type"] == "valid"]
    text = (run_dir / "train.log").read_text(encoding="utf-8") if (run_dir / "train.log").is_file() else ""
    if not valid or "stopped:" not in text:
        return None
    best = max(valid, key=lambda r: r["val_bleu"])
    params = re.search(r"model: \w+, (\d+) parameters", text)
    compute = re.search(r"training compute (\S+),", text)
    return {
        "best_val_bleu": best["val_bleu"], "best_val_chrf": best["val_chrf"], "best_step": best["step"],
        "best_minute": best["elapsed_min"], "best_weights": best.get("weights", "raw"),
        "final_val_bleu": valid[-1]["val_bleu"], "steps": valid[-1]["step"], "epochs": valid[-1]["epoch"],
        "minutes": valid[-1]["elapsed_min"],
        "tokens_per_s": round(sum(r["tokens_per_s"] for r in train) / len(train), 1) if train else None,
        "parameters": int(params.group(1)) if params else None,
        "compute": compute.group(1).replace("torch.", "") if compute else None,
        "curve": [[r["elapsed_min"], r["val_bleu"]] for r in valid],
    }


def run_variant(variant: Variant, args: argparse.Namespace, base: Path, common: list[str], threads: int) -> dict:
    out = Path(args.out) / variant.name
    summary = summarize(out)
    if summary is None:
        if out.exists() and any(out.iterdir()):
            raise SystemExit(f"error: {out} holds an unfinished run; delete it to train this variant again")
        command = [sys.executable, "-m", "seq2seq.train", "--config", str(base), "--out", str(out),
                   "--set", "data.test_splits=[]"]
        if args.steps:
            command += ["--max-steps", str(args.steps), "--set", "train.max_minutes=0"]
        else:
            command += ["--max-minutes", str(args.minutes)]
        if args.data:
            command += ["--data", args.data]
        if threads:
            command += ["--set", f"train.threads={threads}"]
        for override in common + variant.overrides:
            command += ["--set", override]
        print(f"[{time.strftime('%H:%M:%S')}] {variant.name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "sweep_stdout.txt", "w", encoding="utf-8") as sink:
            code = subprocess.run(command, cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT).returncode
        summary = summarize(out)
        if summary is None:
            print(f"{variant.name}: training failed (exit {code}); see {out / 'sweep_stdout.txt'}", file=sys.stderr)
            return {"name": variant.name, "overrides": variant.overrides, "failed": True}
    print(f"[{time.strftime('%H:%M:%S')}] {variant.name}: best validation BLEU {summary['best_val_bleu']:.2f} at "
          f"step {summary['best_step']}", file=sys.stderr, flush=True)
    return {"name": variant.name, "overrides": variant.overrides, **summary}


def markdown_table(results: list[dict], budget: str) -> str:
    rows = sorted((r for r in results if not r.get("failed")), key=lambda r: -r["best_val_bleu"])
    lines = ["| variant | overrides | val BLEU (best) | val chrF | step (minute) | weights | steps | epochs | "
             "target tok/s | compute | params |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        overrides = "<br>".join(r["overrides"]) or "(base)"
        params = f"{r['parameters'] / 1e6:.1f}M" if r["parameters"] else "?"
        lines.append(f"| {r['name']} | {overrides} | **{r['best_val_bleu']:.2f}** | {r['best_val_chrf']:.1f} | "
                     f"{r['best_step']} ({r['best_minute']:.1f}) | {r['best_weights']} | {r['steps']} | {r['epochs'] + 1} | "
                     f"{r['tokens_per_s'] or 0:,.0f} | {r['compute']} | {params} |")
    failed = [r["name"] for r in results if r.get("failed")]
    note = f"\nFailed: {', '.join(failed)}\n" if failed else ""
    return (f"Validation BLEU (greedy, sacreBLEU) after {budget} of training per variant; epochs "
            "counted as started.\n\n" + "\n".join(lines) + "\n" + note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/sweep.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=Path, help="variants YAML file (base, set, variants)")
    parser.add_argument("--variant", action="append", default=[], help="name:section.key=value;... (repeatable)")
    parser.add_argument("--config", type=Path, help="base config (overrides the variants file's base)")
    parser.add_argument("--data", help="corpus (passed to --data)")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, help="training budget per variant, in minutes of wall clock")
    budget.add_argument("--steps", type=int, help="training budget per variant, in optimizer steps")
    parser.add_argument("--out", default="runs/sweep", help="one run directory per variant under here")
    parser.add_argument("--table", type=Path, help="also write the Markdown table here")
    parser.add_argument("--jobs", type=int, default=1, help="variants trained side by side (default 1)")
    args = parser.parse_args(argv)
    base, common, variants = (load_variants(args.variants) if args.variants else (None, [], []))
    variants += [parse_inline(spec) for spec in args.variant]
    base = args.config or base or REPO_ROOT / "configs" / "multi30k_en_de.yaml"
    if not variants:
        parser.error("no variants: give --variants FILE or --variant name:overrides")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        parser.error(f"variant names must be unique: {names}")
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda v: run_variant(v, args, base, common, threads), variants))
    report = {"base": str(base), "set": common, "minutes": args.minutes, "steps": args.steps, "jobs": args.jobs,
              "results": results}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "sweep.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown_table(results, f"{args.steps} steps" if args.steps else f"{args.minutes:g} minutes")
    print(table)
    if args.table:
        args.table.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
