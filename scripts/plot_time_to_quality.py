"""Draw BLEU against minutes of training from runs' ``train_log.jsonl`` (and ``results.json``) files.

    python scripts/plot_time_to_quality.py --out docs/time_to_quality.png \
        "CPU recipe, AMD EPYC 2 cores=runs/multi30k_en_de" "same, fp32=runs/quickstart_fp32"

Each run is ``LABEL=RUN_DIR``. Lines: validation BLEU (greedy) at each validation against training minutes
(validation time included); a star at the end: the best model's test BLEU (first test split, beam search) from
``results.json`` when the run has one. Also prints the points as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_run(run_dir: Path) -> tuple[list[tuple[float, float]], tuple[str, str, float] | None]:
    """((minute, validation BLEU) per validation, (split, search, test BLEU) or None)."""
    log = run_dir / "train_log.jsonl"
    if not log.is_file():
        raise SystemExit(f"error: {log} not found (is {run_dir} a training run?)")
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    points = [(r["elapsed_min"], r["val_bleu"]) for r in records if r.get("type") == "valid"]
    test = None
    results_file = run_dir / "results.json"
    if results_file.is_file():
        results = json.loads(results_file.read_text(encoding="utf-8"))
        for split, searches in results.items():
            beams = [name for name in searches if name.startswith("beam")]
            if beams:
                test = (split, beams[0], searches[beams[0]]["bleu"])
                break
    return points, test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/plot_time_to_quality.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="Multi30k en-de: BLEU against minutes of training")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    print("| run | minute | validation BLEU |\n|---|---|---|")
    for spec in args.runs:
        label, _, directory = spec.rpartition("=")
        if not label:
            parser.error(f"{spec!r}: expected LABEL=RUN_DIR")
        points, test = read_run(Path(directory))
        line, = ax.plot([m for m, _ in points], [b for _, b in points], marker="o", markersize=3, label=label)
        for minute, bleu in points:
            print(f"| {label} | {minute:.1f} | {bleu:.2f} |")
        if test and points:
            split, search, bleu = test
            ax.plot([points[-1][0]], [bleu], marker="*", markersize=11, color=line.get_color(), linestyle="none")
            ax.annotate(f"{bleu:.1f}", (points[-1][0], bleu), textcoords="offset points", xytext=(6, -3), fontsize=8)
            print(f"| {label} | test {split} {search} | {bleu:.2f} |")
    ax.set_xlabel("minutes of training (validation included)")
    ax.set_ylabel("BLEU (sacreBLEU)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.plot([], [], marker="*", linestyle="none", color="gray", label="test BLEU of the best model (beam)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    plt.close(fig)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
