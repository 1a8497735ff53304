"""``--joeynmt``: JoeyNMT 2.3.0 trained on this machine in the same run, and our training speed over its (per
sentence pair always, per target token where both use the same tokenization)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from seq2seq.config import Config
from seq2seq.data import read_split


def measure_joeynmt(seconds: int, cfg: Config, peer_script: Path) -> dict[str, Any]:
    """JoeyNMT 2.3.0's training throughput on this machine now (``peer_script``:
    ``../shared/peers/joeynmt/speed.sh``), on its reference workload (unigram 8k per language), with its target
    pieces per training sentence so that speeds under different tokenizations compare per sentence."""
    import sentencepiece as spm

    print(f"[joeynmt] training JoeyNMT 2.3.0 for {seconds} s ({peer_script}) ...", file=sys.stderr, flush=True)
    done = subprocess.run(["bash", str(peer_script), str(seconds)], capture_output=True, text=True)
    figure = [line for line in done.stdout.splitlines() if line.startswith("joeynmt_target_tokens_per_s")]
    if done.returncode != 0 or not figure:
        raise RuntimeError(f"{peer_script} failed (exit {done.returncode}): {done.stderr[-500:]}")
    tokens_per_s = float(figure[-1].split()[1])
    spm_dir = Path(os.environ.get("PEER_DIR", Path.home() / ".cache" / "seq2seq-peers")) / "spm"
    raw = read_split(cfg.data, cfg.data.train_split)
    src = spm.SentencePieceProcessor(model_file=str(spm_dir / "en.model")).encode(list(raw["src"]))
    tgt = spm.SentencePieceProcessor(model_file=str(spm_dir / "de.model")).encode(list(raw["tgt"]))
    kept = [len(t) + 1 for s, t in zip(src, tgt) if len(s) <= 50 and len(t) <= 50]  # its max_length; + EOS
    pieces = sum(kept) / len(kept)
    return {"seconds": seconds, "target_tokens_per_s": tokens_per_s, "target_pieces_per_sentence": pieces,
            "sentences_per_s": tokens_per_s / pieces, "workload": "unigram 8k per language, GRU 256/256x2/512, "
            "Bahdanau, input feeding, 4,096-token batches (../shared/peers/joeynmt/config.template.yaml)"}


def print_joeynmt(peer: dict[str, Any], variants: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Ours / JoeyNMT's training speed, measured side by side in this run: per target token where both use
    the same tokenization, and per sentence pair always."""
    print(f"\nJoeyNMT 2.3.0 measured in this run ({peer['seconds']} s of training): {peer['target_tokens_per_s']:.0f} "
          f"target tokens/s, {peer['target_pieces_per_sentence']:.2f} target pieces per sentence -> "
          f"{peer['sentences_per_s']:.1f} sentence pairs/s")
    ratios = {}
    for v in variants:
        tr = v.get("train")
        if not tr:
            continue
        same = abs(tr["target_pieces_per_sentence"] - peer["target_pieces_per_sentence"]) < 0.5
        ratios[v["name"]] = {"sentences": tr["sentences_per_s"] / peer["sentences_per_s"]}
        line = f"  {v['name']:12} sentence pairs/s x{ratios[v['name']]['sentences']:.2f}"
        if same:
            ratios[v["name"]]["target_tokens"] = tr["target_tokens_per_s"] / peer["target_tokens_per_s"]
            line += f", target tokens/s x{ratios[v['name']]['target_tokens']:.2f} (same tokenization)"
        print(line)
    return ratios
