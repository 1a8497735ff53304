"""seq2seq/bench (what scripts/benchmark.py runs): the analytic FLOP count against FlopCounterMode, variant
parsing, and a quick run of scripts/benchmark.py on Multi30k that writes a complete JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from seq2seq.token_batches import collate
from seq2seq.bench.flops import counted_training_flops, training_flops
from seq2seq.bench.report import compare_ratios
from seq2seq.bench.training_speed import bench_training
from seq2seq.bench.variants import parse_variants
from seq2seq.config import ConfigError, ModelConfig
from seq2seq.model import build_model

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "benchmark.py"


MODELS = {
    "gru-bi-bahdanau-feed": {},
    "lstm-uni-luong_general-textbook": dict(rnn_type="lstm", bidirectional=False, attention="luong_general",
                                            rnn_impl="reference"),
    "gru-2layers-luong_dot-parallel": dict(encoder_layers=2, decoder_layers=2, attention="luong_dot",
                                           input_feeding=False, encoder_hidden_size=12),
    "gru-tied-zero-bridge": dict(tie_embeddings=True, bridge="zero", decoder_layers=2),
}


@pytest.mark.parametrize("overrides", MODELS.values(), ids=MODELS.keys())
def test_training_flops_matches_flop_counter(overrides):
    cfg = ModelConfig(**{"emb_size": 16, "encoder_hidden_size": 16, "decoder_hidden_size": 24, "dropout": 0.0,
                         "input_feeding": True, **overrides})
    src_vocab, tgt_vocab = 50, 70
    model = build_model(cfg, src_vocab, tgt_vocab)
    generator = torch.Generator().manual_seed(0)
    src_lengths, tgt_pieces = [9, 6, 3, 7], [8, 4, 5, 2]
    src = [torch.randint(4, src_vocab, (n - 1,), generator=generator).tolist() + [3] for n in src_lengths]
    tgt = [torch.randint(4, tgt_vocab, (n,), generator=generator).tolist() for n in tgt_pieces]
    batch = collate(src, tgt)
    counted, _ = counted_training_flops(model, batch)
    b, s, t = batch.size, batch.src.size(1), batch.tgt_in.size(1)
    src_positions = sum(src_lengths) if cfg.rnn_impl == "fused" else b * s  # packed vs stepped over padding
    analytic = training_flops(cfg, src_vocab, tgt_vocab, src_positions, b * t, b * s * t, b, key_positions=b * s)
    assert analytic == pytest.approx(counted, rel=0.15)


def test_training_flops_reference_workload_is_about_47_mflop_per_target_token():
    from seq2seq.config import load_config

    cfg = load_config(REPO_ROOT / "configs" / "multi30k_en_de.yaml").model
    flops = training_flops(cfg, 8000, 8000, src_tokens=14, tgt_tokens=15)  # one typical sentence
    assert 40e6 < flops / 15 < 55e6


def test_parse_variants():
    assert [(v.name, v.dtype, v.overrides) for v in parse_variants(None, "bf16")] == [("baseline", "bf16", [])]
    assert [(v.name, v.dtype) for v in parse_variants("fp32,bf16", "fp32")] == [("fp32", "fp32"), ("bf16", "bf16")]
    variants = parse_variants("ref:model.rnn_impl=fused,text:model.rnn_impl=reference;dtype=bf16;"
                              "data.test_splits=[a,b]", "fp32")
    assert [(v.name, v.dtype, v.overrides) for v in variants] == [
        ("ref", "fp32", ["model.rnn_impl=fused"]),
        ("text", "bf16", ["model.rnn_impl=reference", "data.test_splits=[a,b]"]),
    ]
    with pytest.raises(ConfigError, match="names must differ"):
        parse_variants("fp32,fp32", "fp32")
    with pytest.raises(ConfigError, match="dtype"):
        parse_variants("x:dtype=fp8", "fp32")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One data cache for the runs below: the second reuses the tokenizers and the tokenized corpus."""
    return tmp_path_factory.mktemp("bench_cache")


def test_quick_benchmark_writes_a_complete_report(multi30k_dir, cache_dir, tmp_path):
    out = tmp_path / "bench.json"
    # One thread: the quick run stays fast even when other jobs share the two cores (two OpenMP threads on a busy
    # machine are many times slower).
    command = [sys.executable, str(SCRIPT), "--quick", "--data", str(multi30k_dir), "--json", str(out),
               "--set", f"data.cache_dir={cache_dir}", "--set", "train.threads=1"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    for key in ("timestamp", "torch", "device", "threads", "dtype", "gemm", "variants"):
        assert key in report
    assert report["gemm"]["peak_gflops"]["fp32"] > 0 and report["gemm"]["peak_gflops"]["bf16"] > 0
    (variant,) = report["variants"]
    assert variant["config"]["model"]["rnn_type"] == "gru"
    train = variant["train"]
    for key in ("target_tokens_per_s", "src_tgt_tokens_per_s", "peak_memory_mib", "mflop_per_target_token",
                "achieved_gflops", "fraction_of_gemm_peak"):
        assert train[key] > 0, key
    check = train["flop_check"]
    assert check["analytic"] == pytest.approx(check["counted"], rel=0.15)
    decode = variant["decode"]
    assert decode["sentences"] == 64 and decode["split"] == "test_2016_flickr"
    for name in ("greedy", "beam"):
        for key in ("sentences_per_s", "tokens_per_s", "latency_p50_ms", "latency_p95_ms"):
            assert decode[name][key] > 0, (name, key)
        assert decode[name]["latency_sentences"] == 10
    assert decode["beam"]["beam_size"] == 5


def make_peer_models(multi30k_dir: Path, peer_home: Path) -> None:
    """Small stand-ins for the SentencePiece models the peers' harnesses make in $PEER_DIR/spm."""
    import gzip

    import sentencepiece as spm

    (peer_home / "spm").mkdir(parents=True)
    for lang in ("en", "de"):
        with gzip.open(multi30k_dir / f"train.{lang}.gz", "rt", encoding="utf-8") as lines:
            text = "".join(line for _, line in zip(range(2000), lines))
        (peer_home / f"train.{lang}").write_text(text, encoding="utf-8")
        spm.SentencePieceTrainer.train(input=str(peer_home / f"train.{lang}"), vocab_size=300, model_type="unigram",
                                       model_prefix=str(peer_home / "spm" / lang), num_threads=1, minloglevel=2)


def fake_onmt_translate(peer_home: Path) -> Path:
    """A stand-in for OpenNMT-py's ``onmt_translate`` in the harness's virtual environment (OpenNMT-py is not
    installed here): it copies its source pieces to its output, notes its arguments in ``translate_calls.txt`` and
    logs its timer as the real one does, 2.5 ms a sentence greedy and 5.0 with a beam."""
    script = peer_home / "opennmt-venv" / "bin" / "onmt_translate"
    script.parent.mkdir(parents=True)
    script.write_text(f"""#!{sys.executable}
import sys, shutil
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
shutil.copy(args["-src"], args["-output"])
with open("{peer_home}/translate_calls.txt", "a") as calls:
    calls.write(" ".join(sys.argv[1:]) + "\\n")
print("[2026-12-06 18:00:00,000 INFO] Average translation time (ms): " + ("2.5" if args["-beam_size"] == "1" else "5.0"), file=sys.stderr)
""", encoding="utf-8")
    script.chmod(0o755)
    return script


def fake_pymarian(peer_home: Path) -> Path:
    """A stand-in for ``pymarian`` in the Marian harness's virtual environment (its library is 1 GB): ``decode``
    copies its input text to its output, notes its arguments in ``marian_calls.txt`` and logs its timer as the real
    one does, 3 ms a sentence greedy and 6 with a beam (and takes that long)."""
    script = peer_home / "marian-venv" / "bin" / "pymarian"
    script.parent.mkdir(parents=True)
    script.write_text(f"""#!{sys.executable}
import sys, shutil, time
args = {{name: sys.argv[sys.argv.index(name) + 1] for name in ("-i", "-o", "-b")}}
shutil.copy(args["-i"], args["-o"])
with open("{peer_home}/marian_calls.txt", "a") as calls:
    calls.write(" ".join(sys.argv[1:]) + "\\n")
lines = len(open(args["-i"]).read().splitlines())
seconds = lines * (0.003 if args["-b"] == "1" else 0.006)
time.sleep(seconds)  # its process lasts at least as long as its timer says
print(f"[2026-12-07 23:38:57] Total time: {{seconds:.5f}}s wall", file=sys.stderr)
""", encoding="utf-8")
    script.chmod(0o755)
    return script


def test_compare_reports_ratios_to_the_first_variant_and_to_each_peer(multi30k_dir, cache_dir, tmp_path):
    """Three variants, then the three peers (harnesses that print what the real ones printed), one after the other
    in the order named, each given --peer-seconds; our speed over each in the report. With --peer-decode the
    OpenNMT-py harness keeps its checkpoints and the last one decodes our sentences (a stand-in translator that
    copies its input), as does Marian's model (plain text in and out); JoeyNMT's harness keeps none."""
    out, harnesses, peer_home = tmp_path / "bench.json", tmp_path / "harnesses", tmp_path / "peer_home"
    fake_harness(harnesses, "opennmt", {"stdout": OPENNMT_OUTPUT},
                 keeps='mkdir -p "$ONMT_RUN" && touch "$ONMT_RUN/model_step_900.pt" "$ONMT_RUN/model_step_1000.pt"')
    fake_harness(harnesses, "joeynmt", {"stdout": JOEYNMT_OUTPUT})
    make_peer_models(multi30k_dir, peer_home)
    fake_harness(harnesses, "marian", {"stdout": MARIAN_OUTPUT}, script="run.sh",
                 keeps=f'mkdir -p "$MARIAN_RUN" && touch "$MARIAN_RUN/model.npz" && '
                       f'cp {peer_home}/spm/en.model "$MARIAN_RUN/vocab.en.spm" && '
                       f'cp {peer_home}/spm/de.model "$MARIAN_RUN/vocab.de.spm" && '
                       f"printf '%s' '{MARIAN_LOG}' > \"$MARIAN_RUN/train.log\"")
    fake_onmt_translate(peer_home)
    fake_pymarian(peer_home)
    command = [sys.executable, str(SCRIPT), "--quick", "--data", str(multi30k_dir), "--json", str(out),
               "--set", f"data.cache_dir={cache_dir}", "--set", "train.threads=1", "--decode-sentences", "6",
               "--latency-sentences", "2", "--steps", "1", "--warmup", "0", "--compare",
               "small:model.decoder_hidden_size=64,tiny:model.decoder_hidden_size=32;dtype=bf16,picked:dtype=auto",
               "--peers", "opennmt,joeynmt,marian", "--peer-seconds", "7", "--peers-dir", str(harnesses),
               "--peer-decode"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PEER_DIR": str(peer_home), "MARIAN_DECODE_ARGS": "--gemm-type packed16"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert [v["name"] for v in report["variants"]] == ["small", "tiny", "picked"]
    assert report["variants"][1]["dtype"] == "bf16" and report["variants"][1]["train"]["compute"] == "bf16"
    assert report["variants"][2]["train"]["compute"] in ("fp32", "bf16")  # auto: whichever measured faster
    speeds = [v["train"]["target_tokens_per_s"] for v in report["variants"]]
    assert report["ratios"]["train tokens/s"] == pytest.approx(
        {"small": 1.0, "tiny": speeds[1] / speeds[0], "picked": speeds[2] / speeds[0]})
    assert (harnesses / "calls.txt").read_text() == "opennmt 7\njoeynmt 7\nmarian 7\n"
    peers = report["peers"]
    assert list(peers) == ["opennmt", "joeynmt", "marian"]
    assert peers["opennmt"]["target_tokens_per_s"] == pytest.approx(549)
    assert peers["opennmt"]["target_tokens_per_batch"] == pytest.approx(3688)
    assert peers["joeynmt"]["target_tokens_per_s"] == pytest.approx(257)
    assert "replayed" in peers["joeynmt"]["batch_source"] and peers["joeynmt"]["target_tokens_per_batch"] > 0
    # Marian's figures: its labels/s; its pieces per sentence by its own models (copies of the others' here)
    marian = peers["marian"]
    assert marian["target_tokens_per_s"] == pytest.approx(594) and marian["updates"] == 600
    assert marian["target_pieces_per_sentence"] == pytest.approx(peers["opennmt"]["target_pieces_per_sentence"])
    assert marian["target_tokens_per_batch"] == pytest.approx(MARIAN_LABELS_PER_UPDATE)
    assert marian["mflop_per_target_token"] is None and marian["fraction_of_fp32_gemm_peak"] is None
    assert marian["harness_test2016"] == {"greedy": {"bleu": 27.9, "process_sentences_per_s": 92.6},
                                          "beam5": {"bleu": 28.4, "process_sentences_per_s": 26.5}}
    for peer in (peers["opennmt"], peers["joeynmt"]):
        # the stand-in's printed speed is fixed while the peak is this machine's, so the share is checked by
        # its definition, not by a range (a busy machine measures a low peak)
        assert peer["seconds"] == 7 and peer["fraction_of_fp32_gemm_peak"] == pytest.approx(
            peer["achieved_gflops"] / report["gemm"]["peak_gflops"]["fp32"])
        assert peer["achieved_gflops"] == pytest.approx(peer["target_tokens_per_s"] * peer["mflop_per_target_token"]
                                                        / 1e3)
        for v in report["variants"]:
            ratio, train = peer["ratios"][v["name"]], v["train"]
            assert ratio["sentences"] == pytest.approx(train["sentences_per_s"] / peer["sentences_per_s"])
            assert ratio["ours_target_tokens_per_batch"] == train["target_tokens_per_batch"]
            assert train["target_tokens_per_batch"] == pytest.approx(train["target_tokens"] / train["steps"])
    assert "ours over each peer" in done.stdout and "what a batch size counts" in done.stdout
    for peer in peers.values():
        for v in report["variants"]:
            assert peer["ratios"][v["name"]]["sentences"] == pytest.approx(
                v["train"]["sentences_per_s"] / peer["sentences_per_s"])
    assert_peer_decoding(report, peer_home, multi30k_dir)
    assert_marian_decoding(report, peer_home, multi30k_dir)
    assert "JoeyNMT 2.3.0: not decoded" in done.stdout and "decoding beside OpenNMT-py 3.5.1" in done.stdout
    assert "decoding beside Marian 1.12.42" in done.stdout


def test_peer_model_decodes_a_model_kept_from_an_earlier_run_without_training_the_peer(multi30k_dir, cache_dir,
                                                                                       tmp_path):
    """--peer-model: the named checkpoint decodes our sentences beside ours; no harness runs (the peers folder has
    none, which would otherwise stop the benchmark), and the report says the model was trained before."""
    out, peer_home = tmp_path / "bench.json", tmp_path / "peer_home"
    make_peer_models(multi30k_dir, peer_home)
    fake_onmt_translate(peer_home)
    kept = tmp_path / "kept" / "model_step_900.pt"
    kept.parent.mkdir()
    kept.touch()
    command = [sys.executable, str(SCRIPT), "--quick", "--data", str(multi30k_dir), "--json", str(out),
               "--set", f"data.cache_dir={cache_dir}", "--set", "train.threads=1", "--decode-sentences", "6",
               "--latency-sentences", "2", "--steps", "1", "--warmup", "0", "--peers", "opennmt", "--peer-decode",
               "--peer-model", str(kept), "--peers-dir", str(tmp_path / "no_harnesses")]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PEER_DIR": str(peer_home)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    peer = json.loads(out.read_text(encoding="utf-8"))["peers"]["opennmt"]
    assert peer["model"] == str(kept) and peer["seconds"] is None and peer["decode"]["model"] == str(kept)
    calls = [line.split() for line in (peer_home / "translate_calls.txt").read_text().splitlines()]
    assert len(calls) == 4 and all(dict(zip(c[::2], c[1::2]))["-model"] == str(kept) for c in calls)
    assert "decoding beside OpenNMT-py 3.5.1 (trained before this run" in done.stdout


def assert_peer_decoding(report: dict, peer_home: Path, multi30k_dir: Path) -> None:
    """The last checkpoint (by step, not by name) decoded our 6 sentences at batch 64 and the first 2 at batch 1,
    greedy then beam 5; speeds from its timer; BLEU of its output detokenized, against sacreBLEU called here."""
    import gzip

    import sacrebleu
    import sentencepiece as spm

    model = peer_home / "opennmt-run" / "model_step_1000.pt"
    assert report["peers"]["opennmt"]["model"] == str(model) and report["peers"]["joeynmt"]["model"] is None
    calls = [line.split() for line in (peer_home / "translate_calls.txt").read_text().splitlines()]
    assert [(dict(zip(c[::2], c[1::2]))["-batch_size"], dict(zip(c[::2], c[1::2]))["-beam_size"]) for c in calls] == [
        ("64", "1"), ("1", "1"), ("64", "5"), ("1", "5")]
    assert all(dict(zip(c[::2], c[1::2]))["-model"] == str(model) for c in calls)
    decode = report["peers"]["opennmt"]["decode"]
    with gzip.open(multi30k_dir / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as f:
        sources = [line.rstrip("\n") for _, line in zip(range(6), f)]
    with gzip.open(multi30k_dir / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as f:
        references = [line.rstrip("\n") for _, line in zip(range(6), f)]
    en = spm.SentencePieceProcessor(model_file=str(peer_home / "spm" / "en.model"))
    de = spm.SentencePieceProcessor(model_file=str(peer_home / "spm" / "de.model"))
    copied = [de.decode(en.encode(text, out_type=str)) for text in sources]  # what the stand-in "translated"
    pieces = sum(len(en.encode(text)) + 1 for text in sources)
    for search, ms in (("greedy", 2.5), ("beam", 5.0)):
        figures = decode[search]
        assert figures["sentences_per_s"] == pytest.approx(1000 / ms)
        assert figures["tokens_per_s"] == pytest.approx(pieces / (6 * ms / 1000))
        assert figures["latency_mean_ms"] == pytest.approx(ms) and figures["latency_sentences"] == 2
        assert figures["bleu"] == pytest.approx(round(sacrebleu.corpus_bleu(copied, [references]).score, 2))
        for variant in report["variants"]:
            ours = variant["decode"][search]
            ratios = decode["ratios"][variant["name"]]
            assert ratios[f"{search} sentences/s"] == pytest.approx(ours["sentences_per_s"] * ms / 1000)
            assert ratios[f"{search} BLEU ours - theirs"] == pytest.approx(ours["bleu"] - figures["bleu"])


def test_compare_ratios_by_hand():
    """Figures over the first variant's, per metric; a metric the baseline lacks is left out."""
    variants = [
        {"name": "a", "train": {"target_tokens_per_s": 200.0}, "decode": {"beam": {"latency_p50_ms": 40.0}}},
        {"name": "b", "train": {"target_tokens_per_s": 300.0}, "decode": {"beam": {"latency_p50_ms": 10.0}}},
        {"name": "c", "train": {"target_tokens_per_s": 50.0}},
    ]
    ratios = compare_ratios(variants)
    assert ratios == {"train tokens/s": {"a": 1.0, "b": 1.5, "c": 0.25}, "beam p50 latency": {"a": 1.0, "b": 0.25}}


def test_training_rounds_alternate_between_variants_and_time_every_step():
    """7 steps in 3 rounds: each variant runs 2, 2, 3 steps, taking turns A B A B A B."""
    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def run(self, steps):
            calls.append((self.name, steps))

    bench_training([Recorder("A"), Recorder("B")], steps=7, rounds=3)
    assert calls == [("A", 2), ("B", 2), ("A", 2), ("B", 2), ("A", 3), ("B", 3)]
    calls.clear()
    bench_training([Recorder("A")], steps=2, rounds=5)  # never more rounds than steps, never a 0-step turn
    assert calls == [("A", 1), ("A", 1)]


def assert_marian_decoding(report: dict, peer_home: Path, multi30k_dir: Path) -> None:
    """Marian's kept model decoded our 6 sentences as text (batch 64, maxi-batch 100), then the first 2 one at a
    time (batch 1, maxi-batch 1), greedy then beam 5; its pieces counted by its target model; its speeds from its
    timer, and its whole process timed apart (at least its timer's time)."""
    import gzip

    import sacrebleu
    import sentencepiece as spm

    run = peer_home / "marian-run"
    assert report["peers"]["marian"]["model"] == str(run / "model.npz")
    calls = [line.split() for line in (peer_home / "marian_calls.txt").read_text().splitlines()]
    value = lambda call, name, at=1: call[call.index(name) + at]  # noqa: E731
    assert [(value(c, "--mini-batch"), value(c, "--maxi-batch"), value(c, "-b")) for c in calls] == [
        ("64", "100", "1"), ("1", "1", "1"), ("64", "100", "5"), ("1", "1", "5")]
    assert all(c[0] == "decode" and value(c, "-m") == str(run / "model.npz") for c in calls)
    assert all(c[-2:] == ["--gemm-type", "packed16"] for c in calls)  # $MARIAN_DECODE_ARGS, last: they win
    assert all((value(c, "-v"), value(c, "-v", 2)) == (str(run / "vocab.en.spm"), str(run / "vocab.de.spm"))
               for c in calls)
    with gzip.open(multi30k_dir / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as f:
        sources = [line.rstrip("\n") for _, line in zip(range(6), f)]
    with gzip.open(multi30k_dir / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as f:
        references = [line.rstrip("\n") for _, line in zip(range(6), f)]
    de = spm.SentencePieceProcessor(model_file=str(peer_home / "spm" / "de.model"))
    pieces = sum(len(de.encode(text)) + 1 for text in sources)  # the copied sources, cut by its target model
    decode = report["peers"]["marian"]["decode"]
    for search, ms in (("greedy", 3.0), ("beam", 6.0)):
        figures = decode[search]
        assert figures["sentences_per_s"] == pytest.approx(1000 / ms, rel=1e-3)
        assert figures["tokens_per_s"] == pytest.approx(pieces / (6 * ms / 1000), rel=1e-3)
        assert figures["latency_mean_ms"] == pytest.approx(ms, rel=1e-3) and figures["latency_sentences"] == 2
        assert figures["bleu"] == pytest.approx(round(sacrebleu.corpus_bleu(sources, [references]).score, 2))
        assert figures["process_seconds"] >= figures["seconds"]
        assert figures["process_sentences_per_s"] == pytest.approx(6 / figures["process_seconds"])
        assert figures["process_latency_mean_ms"] >= figures["latency_mean_ms"]


# ---------------------------------------------------------------------------------------------- peers (--peers)
# What the harnesses printed in real (niced, hence slow) runs on this project's machine, 2026-12-02: the figures are
# not measurements, the format is what is tested. A run too short for two reports fails: its harness drops the
# first report, so it has no figure left (the 150 s OpenNMT-py run and the 120 s JoeyNMT run below).
OPENNMT_TOO_SHORT = {
    "stdout": "Step 10 bsz(src/tgt/sents) 3281/3784/285 tgt_tok/s 293 at 129 s\n",
    "stderr": "    return Variable._execution_engine.run_backward(  # Calls into the C++ engine to run the backward "
              "pass\n"
              "KeyboardInterrupt\nOpenNMT-py produced no throughput figure\n",
}
JOEYNMT_TOO_SHORT = {"stdout": "", "stderr": "JoeyNMT produced no throughput figure\n"}
# A run that had two reports (240 s, niced; ../shared/peers/*/speed.sh 240 from scripts/benchmark.py --peers):
OPENNMT_OUTPUT = """Step 10 bsz(src/tgt/sents) 3281/3784/285 tgt_tok/s 325 at 116 s
Step 20 bsz(src/tgt/sents) 3519/3688/283 tgt_tok/s 549 at 184 s
opennmt_parameters 12074560 (JoeyNMT 2.3.0 on this workload: 12262912); reports: 2
opennmt_target_tokens_per_s 549
"""
JOEYNMT_OUTPUT = "joeynmt_target_tokens_per_s 257\n"
# ../shared/peers/marian/run.sh's last lines (the figures of issue 40's side-by-side run) and the first progress
# lines of a real Marian 1.12.42 log (a 60-update run of a small model, 2026-12-07)
MARIAN_OUTPUT = """marian_updates 600 in 7 s
marian_target_labels_per_s 594
marian_test2016_bleu_greedy 27.9 (92.6 sent/s, whole process)
marian_test2016_bleu_beam5 28.4 (26.5 sent/s, whole process)
"""
MARIAN_LOG = """[2026-12-07 23:38:31] [training] Batches are processed as 1 process(es) x 2 devices/process
[2026-12-07 23:38:35] Ep. 1 : Up. 10 : Sen. 432 : Cost 5.70949697 * 12,024 @ 1,088 after 12,024 : Time 3.79s : 3171.25 words/s : gNorm 0.3177
[2026-12-07 23:38:39] Ep. 1 : Up. 20 : Sen. 823 : Cost 5.69701004 * 12,398 @ 1,235 after 24,422 : Time 4.15s : 2988.89 words/s : gNorm 0.3119
[2026-12-07 23:38:42] Ep. 1 : Up. 30 : Sen. 1,233 : Cost 5.68882465 * 11,460 @ 1,056 after 35,882 : Time 3.41s : 3358.75 words/s : gNorm 0.3126
"""
#: the windows after the first: 12,398 and 11,460 labels over 10 updates each; their median
MARIAN_LABELS_PER_UPDATE = (1239.8 + 1146.0) / 2
# the harness's own run (--cost-type ce-mean-words: no label counts, labels/s and seconds instead), 2026-12-08,
# across its first epoch's end ("Sen." counts from 0 again)
MARIAN_MEAN_WORDS_LOG = """[2026-12-08 01:01:06] Ep. 1 : Up. 100 : Sen. 6,028 : Cost 6.01957560 : Time 164.06s : 680.12 words/s : gNorm 1.7117
[2026-12-08 01:03:45] Ep. 1 : Up. 200 : Sen. 12,029 : Cost 4.64876795 : Time 158.90s : 695.99 words/s : gNorm 0.8807
[2026-12-08 01:06:15] Ep. 1 : Up. 300 : Sen. 18,231 : Cost 4.11747837 : Time 150.70s : 731.82 words/s : gNorm 0.7331
[2026-12-08 01:08:57] Ep. 1 : Up. 400 : Sen. 24,288 : Cost 3.87578011 : Time 161.95s : 698.30 words/s : gNorm 0.7190
[2026-12-08 01:11:46] Ep. 2 : Up. 500 : Sen. 1,362 : Cost 3.63074040 : Time 168.40s : 653.69 words/s : gNorm 0.7112
"""


def fake_harness(folder: Path, name: str, output: dict[str, str], exit_status: int = 0, keeps: str = "",
                 script: str = "speed.sh") -> Path:
    """A harness (``script``) for ``name`` that prints ``output`` and notes the seconds it was given in
    ``calls.txt`` (and runs ``keeps``, a shell line, first)."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    for stream, text in output.items():
        (folder / name / stream).write_text(text, encoding="utf-8")
    script = folder / name / script
    here = folder / name
    script.write_text(f'{keeps}\necho "{name} $1" >> "{folder}/calls.txt"\ncat "{here}/stdout"\ncat "{here}/stderr" >&2\n'
                      f"exit {exit_status}\n", encoding="utf-8")
    return script


def test_opennmt_harness_output_is_read():
    """The figure is the last line's; the batch is the median of OpenNMT-py's 'bsz' reports after the first (the
    reports the harness's figure is the median of)."""
    from seq2seq.bench.opennmt import OPENNMT, opennmt_batches
    from seq2seq.bench.peers import harness_figure

    stdout = OPENNMT_OUTPUT
    assert harness_figure(stdout, OPENNMT) == pytest.approx(549)
    batches = opennmt_batches(stdout, corpus=None)
    assert batches["target_tokens_per_batch"] == pytest.approx(3688)
    assert batches["sentences_per_batch"] == pytest.approx(283)
    assert batches["reports"] == 2 and batches["parameters"] == 12074560
    only = opennmt_batches(OPENNMT_TOO_SHORT["stdout"], corpus=None)  # one report: that one
    assert (only["target_tokens_per_batch"], only["sentences_per_batch"], only["reports"]) == (3784, 285, 1)
    none = opennmt_batches("opennmt_target_tokens_per_s 900\n", corpus=None)
    assert none["target_tokens_per_batch"] is None and "not in its output" in none["batch_source"]


def test_marian_log_and_harness_output_are_read(tmp_path):
    """The figure is the labels/s line; an update's labels and sentences come from the log's progress lines (each
    line's since the line before, over its updates; the first window dropped, the median of the rest); the
    harness's own test figures are kept; without a log there is no batch figure, and no error."""
    from seq2seq.bench.marian import MARIAN, marian_batches
    from seq2seq.bench.peers import harness_figure

    assert harness_figure(MARIAN_OUTPUT, MARIAN) == pytest.approx(594)
    (tmp_path / "train.log").write_text(MARIAN_LOG, encoding="utf-8")
    batches = marian_batches(MARIAN_OUTPUT, corpus=None, run=tmp_path)
    assert batches["target_tokens_per_batch"] == pytest.approx(MARIAN_LABELS_PER_UPDATE)
    assert batches["sentences_per_batch"] == pytest.approx((39.1 + 41.0) / 2)
    assert batches["updates"] == 600 and batches["harness_test2016"]["beam5"] == {"bleu": 28.4,
                                                                                 "process_sentences_per_s": 26.5}
    (tmp_path / "train.log").write_text(MARIAN_MEAN_WORDS_LOG, encoding="utf-8")
    mean_words = marian_batches(MARIAN_OUTPUT, corpus=None, run=tmp_path)
    # the windows after the first: labels/s x seconds over 100 updates; sentences within epoch 1 only
    labels = sorted([158.90 * 695.99, 150.70 * 731.82, 161.95 * 698.30, 168.40 * 653.69])
    assert mean_words["target_tokens_per_batch"] == pytest.approx((labels[1] + labels[2]) / 2 / 100)
    assert mean_words["sentences_per_batch"] == pytest.approx((24288 - 18231) / 100)  # the median of 60.01, 62.02, 60.57
    none = marian_batches("marian_target_labels_per_s 594\n", corpus=None, run=tmp_path / "nothing")
    assert none["target_tokens_per_batch"] is None and "no progress lines" in none["batch_source"]
    assert none["updates"] is None and none["harness_test2016"] == {}


def test_joeynmt_harness_output_is_read():
    from seq2seq.bench.joeynmt import JOEYNMT
    from seq2seq.bench.peers import harness_figure

    assert harness_figure(JOEYNMT_OUTPUT, JOEYNMT) == pytest.approx(257)


def test_joeynmt_batches_replayed_by_hand():
    """Pairs (source, target pieces) a=(4,1) b=(4,1) c=(1,2) d=(2,6) e=(1,1), batch_size 10, each counting
    max(source + 1, target + 1). Order a b c d e: a: 1 x 5; a b: 2 x 5 = 10 >= 10, closed (2 sentences, 2 + 2 target
    tokens); c: 1 x 3; c d: 2 x 7 = 14, closed (2, 3 + 7); e: 1 x 2, left over (1, 2)."""
    from seq2seq.bench.joeynmt import replay_joeynmt_batches

    src, tgt = np.array([4, 4, 1, 2, 1]), np.array([1, 1, 2, 6, 1])
    assert replay_joeynmt_batches(src, tgt, 10, order=np.arange(5)) == [(2, 4), (2, 10), (1, 2)]
    # order e d c b a: e d: 2 x 7 = 14 closed (2, 2 + 7); c b: 2 x 5 = 10 closed (2, 3 + 2); a left over (1, 2)
    assert replay_joeynmt_batches(src, tgt, 10, order=np.arange(5)[::-1]) == [(2, 9), (2, 5), (1, 2)]


def test_peer_figures_by_hand():
    """Corpus: pairs of (3, 4) and (5, 6) pieces; 600 target tokens/s over 6 target tokens (pieces + EOS) per
    sentence = 100 sentence pairs/s; FLOPs over 8 source tokens (no source EOS, OpenNMT-py) or 10 (with, JoeyNMT),
    12 target tokens, 3 x 5 + 5 x 7 = 50 or 4 x 5 + 6 x 7 = 62 attention pairs, 2 sentences."""
    from seq2seq.bench.joeynmt import JOEYNMT
    from seq2seq.bench.opennmt import OPENNMT
    from seq2seq.bench.peers import PEER_MODEL, PeerCorpus, peer_figures

    corpus = PeerCorpus(np.array([3, 5]), np.array([4, 6]))
    batches = {"target_tokens_per_batch": 3800.0, "batch_source": "test"}
    for toolkit, src_tokens, pairs in ((OPENNMT, 8, 50), (JOEYNMT, 10, 62)):
        peer = peer_figures(toolkit, 60, 600.0, corpus, batches, fp32_peak=200.0)
        per_token = training_flops(PEER_MODEL, 8000, 8000, src_tokens, 12, attention_pairs=pairs, sentences=2) / 12
        assert peer["target_pieces_per_sentence"] == 6.0 and peer["sentences_per_s"] == pytest.approx(100.0)
        assert peer["mflop_per_target_token"] == pytest.approx(per_token / 1e6)
        assert peer["achieved_gflops"] == pytest.approx(600 * per_token / 1e9)
        assert peer["fraction_of_fp32_gemm_peak"] == pytest.approx(600 * per_token / 1e9 / 200.0)
        assert peer["target_tokens_per_batch"] == 3800.0 and peer["seconds"] == 60


def test_peer_model_is_the_peers_workload_at_about_47_mflop_per_target_token():
    """Issue 23 counts 47.5 MFLOP per target token for the peers' workload (a typical Multi30k pair: 15 source,
    16 target tokens)."""
    from seq2seq.bench.peers import PEER_MODEL

    assert 45e6 < training_flops(PEER_MODEL, 8000, 8000, 15, 16, attention_pairs=15 * 16, sentences=1) / 16 < 50e6


def test_peer_ratios_by_hand():
    """Ours over a peer at 40 sentence pairs/s, 620 target tokens/s, 3,800 real target tokens a batch:
    a: 100 / 40 = 2.5, 1,560 / 620 tokens, batches 1,900 / 3,800 = 0.5 (not equal), 4,096 x 2 = 8,192 to match;
    b: another tokenization (9 pieces a sentence): no token ratio; 3,700 / 3,800 = 0.974, equal (within 10%);
    8,192 x 3,800 / 3,700 = 8,413 -> 8,384 (a multiple of 64); c: no training figures, no row."""
    from seq2seq.bench.peers import peer_ratios

    peer = {"target_pieces_per_sentence": 15.5, "sentences_per_s": 40.0, "target_tokens_per_s": 620.0,
            "target_tokens_per_batch": 3800.0, "fraction_of_fp32_gemm_peak": 0.3}

    def variant(name, max_tokens, **train):
        return {"name": name, "config": {"train": {"max_tokens": max_tokens}},
                "train": dict(train, compute="fp32", fraction_of_gemm_peak=0.4)}

    variants = [variant("a", 4096, target_tokens_per_batch=1900.0, sentences_per_s=100.0, target_tokens_per_s=1560.0,
                        target_pieces_per_sentence=15.6),
                variant("b", 8192, target_tokens_per_batch=3700.0, sentences_per_s=50.0, target_tokens_per_s=450.0,
                        target_pieces_per_sentence=9.0),
                {"name": "c", "config": {"train": {"max_tokens": 4096}}}]
    ratios = peer_ratios(peer, variants)
    assert list(ratios) == ["a", "b"]
    a, b = ratios["a"], ratios["b"]
    assert (a["sentences"], a["target_tokens"], a["batch_ratio"]) == pytest.approx((2.5, 1560 / 620, 0.5))
    assert a["equal_batches"] is False and a["max_tokens_for_equal_batches"] == 8192
    assert (b["sentences"], b["target_tokens"], b["same_tokenization"]) == (1.25, None, False)
    assert b["batch_ratio"] == pytest.approx(3700 / 3800) and b["equal_batches"] is True
    assert b["max_tokens_for_equal_batches"] == 8384
    assert (a["ours_fraction_of_gemm_peak"], a["theirs_fraction_of_fp32_gemm_peak"]) == (0.4, 0.3)
    unknown = peer_ratios(dict(peer, target_tokens_per_batch=None), variants[:1])["a"]
    assert (unknown["batch_ratio"], unknown["equal_batches"], unknown["max_tokens_for_equal_batches"]) == (None, False,
                                                                                                           None)


@pytest.mark.parametrize("name,output", [("opennmt", OPENNMT_TOO_SHORT), ("joeynmt", JOEYNMT_TOO_SHORT)])
def test_a_failing_harness_is_one_clear_error(tmp_path, name, output):
    """A harness that fails (here: what each printed when its budget was too short) or prints no figure."""
    from seq2seq.bench.joeynmt import JOEYNMT
    from seq2seq.bench.opennmt import OPENNMT
    from seq2seq.bench.peers import PeerError, harness_figure, run_harness

    toolkit = {"opennmt": OPENNMT, "joeynmt": JOEYNMT}[name]
    script = fake_harness(tmp_path, name, output, exit_status=1)
    with pytest.raises(PeerError) as failed:
        run_harness(toolkit, script, 120)
    message = str(failed.value)
    assert f"{script} 120 failed (exit 1)" in message and "produced no throughput figure" in message
    assert "--peer-seconds" in message and toolkit.title in message
    with pytest.raises(PeerError, match=f"printed no '{name}_target_tokens_per_s N' line .*--peer-seconds"):
        harness_figure(output["stdout"], toolkit)


def test_a_missing_harness_or_unknown_peer_stops_the_benchmark_before_it_trains(tmp_path, capsys):
    from support.scripts import load_script

    benchmark = load_script("benchmark")
    for argv, said in [
        (["--peers", "opennmt", "--peers-dir", str(tmp_path)], f"{tmp_path}/opennmt/speed.sh not found"),
        (["--peers", "marian", "--peers-dir", str(tmp_path)], f"{tmp_path}/marian/run.sh not found"),
        (["--peers", "joeynmt,fairseq"], "unknown peer(s) fairseq; known: joeynmt, opennmt, marian"),
        (["--whole-process"], "--whole-process times a trained model's decoding: it needs --model DIR"),
        (["--peers", "opennmt,opennmt"], "each peer once"),
        (["--joeynmt", "60", "--peers", "opennmt"], "--joeynmt SECONDS is short for --peers joeynmt --peer-seconds"),
        (["--peer-seconds", "60"], "--peer-seconds must be >= 1 and goes with --peers"),
        (["--peer-decode"], "--peer-decode compares the peers' decoding with ours: it needs --peers"),
        (["--peers", "joeynmt", "--peer-decode", "--peer-model", __file__], "--peer-model PATH decodes with a model"),
        (["--peers", "opennmt", "--peer-model", __file__], "--peer-model PATH decodes with a model"),
        (["--peers", "opennmt", "--peer-decode", "--peer-model", str(tmp_path / "none.pt")], "none.pt: no such file"),
    ]:
        assert benchmark.main(["--quick", *argv]) == 2, argv
        printed = capsys.readouterr()
        assert said in printed.err and "GEMM peak" not in printed.out, argv  # stopped before measuring anything
    fake_harness(tmp_path, "joeynmt", {"stdout": JOEYNMT_OUTPUT})
    args = benchmark.build_parser().parse_args(["--joeynmt", "150", "--peers-dir", str(tmp_path)])
    assert [t.name for t in benchmark.resolve_peers(args)] == ["joeynmt"] and args.peer_seconds == 150


def test_whole_process_decoding_is_the_command_line_with_each_backend(onnx_model_dir, tiny_model_dir, tiny_corpus,
                                                                      capsys):
    """--whole-process: new processes of python -m seq2seq.translate, torch and onnxruntime (where MODEL/onnx/ is),
    greedy and beam 5; their outputs scored as the in-process Translator's translations score; and the ratio over
    a peer's whole process printed."""
    from seq2seq.bench.whole_process import backends, decode_whole_process, print_whole_process
    from seq2seq.metrics import bleu_and_chrf
    from seq2seq.translator import Translator

    sources = (tiny_corpus / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()[:4]
    references = (tiny_corpus / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:4]
    assert backends(tiny_model_dir) == ["torch"] and backends(onnx_model_dir) == ["torch", "onnx"]
    figures = decode_whole_process(onnx_model_dir, sources, references, batch_size=64, latency_sentences=1, threads=1)
    translator = Translator.load(onnx_model_dir, threads=1)
    assert list(figures) == ["torch", "onnx"]
    for backend in figures:
        for name, beam in (("greedy", 1), ("beam", 5)):
            row = figures[backend][name]
            expected = bleu_and_chrf(translator.translate(sources, beam_size=beam), references)["bleu"]
            assert row["bleu"] == pytest.approx(expected), (backend, name)
            assert row["beam_size"] == beam and row["sentences_per_s"] == pytest.approx(4 / row["seconds"])
            assert row["latency_sentences"] == 1 and row["latency_mean_ms"] > 0
    peer = {"toolkit": "Peer", "decode": {name: {"beam_size": beam, "process_sentences_per_s": 2.0,
                                                 "process_latency_mean_ms": 9.0, "bleu": 1.0}
                                          for name, beam in (("greedy", 1), ("beam", 5))}}
    print_whole_process(figures, {"peer": peer})
    printed = capsys.readouterr().out
    ratio = figures["onnx"]["beam"]["sentences_per_s"] / 2.0
    assert "ours (onnx) over Peer, whole process: greedy sentences/s x" in printed and f"x{ratio:.2f}" in printed
