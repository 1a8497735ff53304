"""``--profile``: torch.profiler's top ops (self time) for one training step and one beam batch."""

from __future__ import annotations


import torch

from seq2seq.translator import Translator
from seq2seq.token_batches import TokenBatchSampler, iterate_batches
from seq2seq.bench.workload import Workload
from seq2seq.config import Config
from seq2seq.decoding.driver import translate_ids
from seq2seq.decoding.options import DecodeOptions
from seq2seq.model import Seq2Seq
from seq2seq.training.optimizer import build_optimizer
from seq2seq.training.step import Learner, StepSettings, train_step, training_work
from seq2seq.dtype_auto import choose_autocast


def profile(cfg: Config, work: Workload, model: Seq2Seq, device: torch.device, sources: list[str], rows: int) -> None:
    """Print torch.profiler's top ops (self time) for one training step and one beam batch."""
    amp = choose_autocast(cfg.train.dtype, device, model, training_work(cfg.train.max_tokens), cfg.data.cache_dir)
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    sampler = TokenBatchSampler.from_dataset(work.train_data, cfg.train.max_tokens, cfg.train.seed)
    batch = next(iterate_batches(work.train_data, sampler)).to(device)
    learner = Learner(model, build_optimizer(cfg.train, model.parameters()), StepSettings.of(cfg.train), device, amp)
    model.train()
    with torch_profile(activities=activities) as prof:
        train_step(learner, [batch], batch.num_tgt_tokens)
    print(f"\nprofile: one training step ({batch.size} sentences, {batch.num_tgt_tokens} target tokens)")
    print(prof.key_averages().table(sort_by=sort, row_limit=rows))
    translator = Translator(cfg, model, work.src_tok, work.tgt_tok, device)
    src_ids = translator.encode_sources(sources[:64])
    with torch_profile(activities=activities) as prof:
        translate_ids(translator.model, src_ids, DecodeOptions.from_config(cfg.decode, nbest=1, batch_size=64),
                      device=device, autocast_dtype=amp)
    print(f"\nprofile: beam {cfg.decode.beam_size} over {len(src_ids)} sentences (one batch)")
    print(prof.key_averages().table(sort_by=sort, row_limit=rows))
