"""The printed tables: one variant's training and decoding figures, each variant's figures over the first's
(``--compare``), the peers trained in the same run with our speed over theirs (``--peers``), and their models'
decoding beside ours (``--peer-decode``)."""

from __future__ import annotations

from typing import Any


def print_variant(v: dict[str, Any], peaks: dict[str, float]) -> None:
    print(f"\n== {v['name']}: dtype {v['dtype']}, overrides {v['overrides'] or 'none'}")
    tr = v.get("train")
    if tr:
        check = tr["flop_check"]
        print(f"training ({tr['steps']} steps after warmup, {v['config']['train']['max_tokens']}-position batches, "
              f"compute {tr['compute']})")
        print(f"  target tokens/s          {tr['target_tokens_per_s']:10.1f}   (pieces + EOS)")
        print(f"  source+target tokens/s   {tr['src_tgt_tokens_per_s']:10.1f}")
        print(f"  sentence pairs/s         {tr['sentences_per_s']:10.1f}")
        print(f"  target tokens / batch    {tr['target_tokens_per_batch']:10.1f}   (real, of "
              f"{v['config']['train']['max_tokens']} padded source + target positions)")
        print(f"  step time                {tr['step_seconds'] * 1000:10.1f} ms")
        print(f"  peak memory              {tr['peak_memory_mib']:10.1f} MiB ({tr['peak_memory_kind']})")
        print(f"  FLOPs / target token     {tr['mflop_per_target_token']:10.1f} MFLOP (analytic, real tokens, 3 x fwd)")
        print(f"  achieved                 {tr['achieved_gflops']:10.1f} GFLOP/s = "
              f"{100 * tr['fraction_of_gemm_peak']:.1f}% of the {tr['compute']} GEMM peak "
              f"({peaks['fp32' if tr['compute'] == 'fp32' else 'bf16']:.1f})")
        print(f"  FLOP check, one batch    analytic {check['analytic'] / 1e9:.2f} GFLOP vs FlopCounterMode "
              f"{check['counted'] / 1e9:.2f} GFLOP (ratio {check['ratio']:.3f}; padded positions, fwd + bwd)"
              + (f"\n  note: {check['note']}" if check["note"] else ""))
    dec = v.get("decode")
    if dec:
        print(f"decoding {dec['split']} ({dec['sentences']} sentences, batch {dec['batch_size']}, compute "
              f"{dec['compute']}; model: {dec['model']})")
        print(f"  {'':8} {'sent/s':>9} {'tokens/s':>10} {'words/s':>9} {'tok/sent':>9} {'hyp-steps/s':>12} "
              f"{'p50 ms':>8} {'p95 ms':>8} {'BLEU':>6}  (latency: batch 1, {dec['greedy']['latency_sentences']} "
              "sentences)")
        for name in ("greedy", "beam"):
            d = dec[name]
            label = "greedy" if name == "greedy" else f"beam {d['beam_size']}"
            p50, p95 = (f"{d[k]:8.1f}" if d[k] is not None else f"{'-':>8}" for k in ("latency_p50_ms", "latency_p95_ms"))
            bleu = f"{d['bleu']:6.2f}" if d.get("bleu") is not None else f"{'-':>6}"
            print(f"  {label:8} {d['sentences_per_s']:9.1f} {d['tokens_per_s']:10.1f} {d['words_per_s']:9.1f} "
                  f"{d['mean_output_tokens']:9.1f} {d['hypothesis_steps_per_s']:12.0f} {p50} {p95} {bleu}")
        print(f"  tokens = {dec['tokens_counted']}; hyp-steps = hypotheses advanced by decoder.step")


def compare_ratios(variants: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per variant, figure / baseline figure (the first variant is the baseline)."""
    metrics = {
        "train tokens/s": lambda v: v.get("train", {}).get("target_tokens_per_s"),
        "greedy tokens/s": lambda v: v.get("decode", {}).get("greedy", {}).get("tokens_per_s"),
        "beam tokens/s": lambda v: v.get("decode", {}).get("beam", {}).get("tokens_per_s"),
        "greedy hyp-steps/s": lambda v: v.get("decode", {}).get("greedy", {}).get("hypothesis_steps_per_s"),
        "beam hyp-steps/s": lambda v: v.get("decode", {}).get("beam", {}).get("hypothesis_steps_per_s"),
        "greedy p50 latency": lambda v: v.get("decode", {}).get("greedy", {}).get("latency_p50_ms"),
        "beam p50 latency": lambda v: v.get("decode", {}).get("beam", {}).get("latency_p50_ms"),
    }
    base = variants[0]
    table: dict[str, dict[str, float]] = {}
    for name, get in metrics.items():
        if get(base):
            table[name] = {v["name"]: get(v) / get(base) for v in variants if get(v) is not None}
    print(f"\nratios to '{base['name']}' (> 1 = more; for latency > 1 = slower)")
    print(f"  {'':20}" + "".join(f"{v['name']:>14}" for v in variants))
    for name, row in table.items():
        print(f"  {name:20}" + "".join(f"{row.get(v['name'], float('nan')):14.2f}" for v in variants))
    return table


def print_peers(peers: dict[str, dict[str, Any]], peaks: dict[str, float]) -> None:
    """The peers' own figures, then per variant and peer: real target tokens per batch (ours, theirs), our sentence
    pairs/s and target tokens/s over theirs, and both shares of the GEMM peak."""
    print(f"\npeers trained in this run, one after another after ours (fp32 GEMM peak of this run: {peaks['fp32']:.1f} "
          "GFLOP/s)")
    print(f"  {'':17} {'seconds':>7} {'tgt tok/s':>10} {'tok/sent':>8} {'sent/s':>8} {'tgt tok/batch':>13} "
          f"{'MFLOP/tok':>9} {'GFLOP/s':>8} {'% fp32 peak':>11}")
    for peer in peers.values():
        batch_text = f"{peer['target_tokens_per_batch']:.0f}" if peer["target_tokens_per_batch"] else "-"
        flops = (f"{peer['mflop_per_target_token']:9.1f} {peer['achieved_gflops']:8.1f} "
                 f"{100 * peer['fraction_of_fp32_gemm_peak']:10.1f}%") if peer["mflop_per_target_token"] else \
            f"{'-':>9} {'-':>8} {'-':>11}"
        print(f"  {peer['toolkit']:17} {peer['seconds']:7d} {peer['target_tokens_per_s']:10.1f} "
              f"{peer['target_pieces_per_sentence']:8.2f} {peer['sentences_per_s']:8.1f} {batch_text:>13} {flops}")
        for search, test in peer.get("harness_test2016", {}).items():
            print(f"  {'':17} its harness, test_2016_flickr {search}: BLEU {test['bleu']:.2f}, "
                  f"{test['process_sentences_per_s']:.1f} sentences/s (whole process)")
    print("  what a batch size counts, and where a peer's real target tokens per batch come from (every tokens/s "
          "\n  counts real target tokens: pieces + EOS):")
    print("    ours              train.max_tokens >= sentences x (longest source + longest target); length-bucketed")
    for peer in peers.values():
        print(f"    {peer['toolkit']:17} {peer['batch_rule']}\n    {'':17} {peer['batch_source']}")
    print("  FLOPs: the workload's analytic matmul FLOPs per real target token (training, 3 x forward), as for ours "
          "\n  (none for a model that is not one of ours: Marian's conditional GRU)")
    if not any(peer["ratios"] for peer in peers.values()):
        return  # ours was not trained in this run (--skip-train)
    print("\nours over each peer (x > 1: ours faster; target tokens/s only where the tokenization is the same)")
    print(f"  {'variant':12} {'peer':17} {'tgt tok/batch ours / theirs':>28} {'sent/s':>7} {'tgt tok/s':>9} "
          f"{'% peak ours':>12} {'theirs':>7}")
    for peer in peers.values():
        for name, r in peer["ratios"].items():
            theirs, ours = r["theirs_target_tokens_per_batch"], r["ours_target_tokens_per_batch"]
            batches = f"{ours:.0f} / -"
            if theirs:
                match = "equal" if r["equal_batches"] else f"x{r['batch_ratio']:.2f}"
                batches = f"{ours:.0f} / {theirs:.0f} ({match})"
            sentences = f"x{r['sentences']:.2f}"
            tokens = f"x{r['target_tokens']:.2f}" if r["target_tokens"] is not None else "-"
            ours_peak = f"{100 * r['ours_fraction_of_gemm_peak']:.1f}% {r['ours_compute']}"
            theirs_peak = r["theirs_fraction_of_fp32_gemm_peak"]
            theirs_text = f"{100 * theirs_peak:6.1f}%" if theirs_peak is not None else f"{'-':>7}"
            print(f"  {name:12} {peer['toolkit']:17} {batches:>28} {sentences:>7} {tokens:>9} {ours_peak:>12} "
                  f"{theirs_text}")
            if theirs and not r["equal_batches"]:
                print(f"  {'':12} -> equal real target tokens per batch at train.max_tokens="
                      f"{r['max_tokens_for_equal_batches']} (add it to this variant's overrides)")


def print_peer_decoding(peers: dict[str, dict[str, Any]], variants: list[dict[str, Any]]) -> None:
    """Each decoded peer's greedy and beam figures beside each variant's, and ours over theirs (``--peer-decode``)."""
    decoded = {name: peer for name, peer in peers.items() if peer.get("decode")}
    for name, peer in peers.items():
        if "model" in peer and not peer.get("decode"):
            print(f"\n{peer['toolkit']}: not decoded (its harness keeps no model)")
    for peer in decoded.values():
        dec = peer["decode"]
        trained = f"trained {peer['seconds']} s in this run" if peer["seconds"] else "trained before this run"
        print(f"\ndecoding beside {peer['toolkit']} ({trained}; {dec['model']}), "
              f"{dec['sentences']} sentences, batch {dec['batch_size']}; batch-1 latency: the mean over "
              f"{dec['greedy']['latency_sentences']} sentences")
        print(f"  {'':26} {'search':8} {'sent/s':>9} {'pieces/s':>10} {'pieces/sent':>11} {'mean ms b=1':>11} {'BLEU':>6}")
        rows = [(peer["toolkit"], dec)] + [(f"ours: {v['name']} ({v['decode']['compute']})", v["decode"])
                                            for v in variants if v.get("decode")]
        for label, figures in rows:
            for search in ("greedy", "beam"):
                d = figures[search]
                latency = f"{d['latency_mean_ms']:11.1f}" if d.get("latency_mean_ms") else f"{'-':>11}"
                bleu = f"{d['bleu']:6.2f}" if d.get("bleu") is not None else f"{'-':>6}"
                search_label = "greedy" if search == "greedy" else f"beam {d['beam_size']}"
                print(f"  {label:26} {search_label:8} {d['sentences_per_s']:9.1f} {d['tokens_per_s']:10.1f} "
                      f"{d['mean_output_tokens']:11.1f} {latency} {bleu}")
        for variant, ratios in dec["ratios"].items():
            print(f"  ours ({variant}) over {peer['toolkit']}: " + "; ".join(
                f"{key} {value:+.2f}" if "BLEU" in key else f"{key} x{value:.2f}" for key, value in ratios.items()))
