"""Decoding speed: greedy and beam throughput at a batch size (sentences, output tokens, words and decoder
hypothesis-steps per second) and batch-1 latency (p50, p95), with the benchmarked or a trained model."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seq2seq.translator import Translator
from seq2seq.bench.machine import sync
from seq2seq.bench.training_speed import dtype_name
from seq2seq.bench.workload import Workload
from seq2seq.checkpoint import WEIGHTS_FILE, load_state_into, load_weights
from seq2seq.config import Config
from seq2seq.decoding.driver import translate_ids
from seq2seq.decoding.options import DecodeOptions
from seq2seq.metrics import bleu_and_chrf
from seq2seq.model import Seq2Seq, build_model


def bench_decoding(translator: Translator, sources: list[str], batch_size: int, latency_sentences: int,
                   references: list[str] | None = None) -> dict[str, Any]:
    """Greedy and beam throughput at ``batch_size`` and batch-1 latency, in the translator's compute dtype; with
    ``references`` (one per source) also each search's sacreBLEU, so that a speed comes with its quality."""
    amp = translator.autocast_dtype
    src_ids = translator.encode_sources(sources)
    model, device = translator.model.eval(), translator.device
    results = {"compute": dtype_name(amp), "sentences": len(src_ids), "batch_size": batch_size, "tokens_counted": "output pieces incl. EOS "
               "of the returned (best) hypothesis; words = whitespace-separated words of the detokenized output"}
    for name, beam in (("greedy", 1), ("beam", translator.cfg.decode.beam_size)):
        decode = DecodeOptions.from_config(translator.cfg.decode, beam_size=beam, nbest=1, batch_size=batch_size)
        single = decode.replace(batch_size=1)
        translate_ids(model, src_ids[:8], decode, device=device, autocast_dtype=amp)  # warm up
        with counting_steps(model.decoder) as steps:
            sync(device)
            start = time.perf_counter()
            hypotheses = translate_ids(model, src_ids, decode, device=device, autocast_dtype=amp)
            sync(device)
            seconds = time.perf_counter() - start
        tokens = [h[0].tokens for h in hypotheses]
        texts = translator.tgt_tokenizer.decode(tokens)
        words = sum(len(text.split()) for text in texts)
        latencies = []
        for ids in src_ids[:latency_sentences]:
            sync(device)
            started = time.perf_counter()
            translate_ids(model, [ids], single, device=device, autocast_dtype=amp)
            sync(device)
            latencies.append(time.perf_counter() - started)
        results[name] = {
            "beam_size": beam,
            "seconds": seconds,
            "sentences_per_s": len(src_ids) / seconds,
            "tokens_per_s": sum(len(t) + 1 for t in tokens) / seconds,
            "words_per_s": words / seconds,
            "mean_output_tokens": sum(len(t) + 1 for t in tokens) / len(tokens),
            "decoder_steps": steps["calls"],
            "hypothesis_steps_per_s": steps["rows"] / seconds,
            "latency_sentences": len(latencies),
            "latency_p50_ms": float(np.percentile(latencies, 50)) * 1000 if latencies else None,
            "latency_p95_ms": float(np.percentile(latencies, 95)) * 1000 if latencies else None,
            "latency_mean_ms": float(np.mean(latencies)) * 1000 if latencies else None,
        }
        if references is not None:
            scored = bleu_and_chrf(texts, references)
            results[name].update(bleu=scored["bleu"], bleu_signature=scored["bleu_signature"])
    return results


@contextmanager
def counting_steps(decoder):
    """Count ``decoder.step`` calls and the hypotheses (rows) they advance: a throughput figure that does not
    depend on how long the model's outputs are."""
    counts = {"calls": 0, "rows": 0}
    original = decoder.step

    def step(prev_tokens, *args, **kwargs):
        counts["calls"] += 1
        counts["rows"] += prev_tokens.size(0)
        return original(prev_tokens, *args, **kwargs)

    decoder.step = step
    try:
        yield counts
    finally:
        del decoder.step


def decoding_translator(cfg: Config, work: Workload, device: torch.device, model_dir: Path | None,
                        trained: Seq2Seq | None) -> Translator:
    """The benchmarked model, or the trained weights of ``model_dir`` (in this variant's model config)."""
    if model_dir is None:
        if trained is None:
            torch.manual_seed(cfg.train.seed)
            trained = build_model(cfg.model, work.src_tok.vocab_size, work.tgt_tok.vocab_size).to(device)
        return Translator(cfg, trained, work.src_tok, work.tgt_tok, device)
    model = build_model(cfg.model, work.src_tok.vocab_size, work.tgt_tok.vocab_size)
    load_state_into(model, load_weights(model_dir / WEIGHTS_FILE), model_dir / WEIGHTS_FILE)
    return Translator(cfg, model.to(device), work.src_tok, work.tgt_tok, device)
