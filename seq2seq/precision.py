"""Compute dtypes, and ``dtype: auto`` chosen by measurement on the machine at hand.

CPU flags do not say which dtype is faster: one Intel Xeon lists ``avx512_bf16`` yet runs bf16 matmul at half
of fp32's speed, while an AMD EPYC runs it at twice; on a GPU, small launch-bound steps can make bf16 autocast
slower than fp32. So ``auto`` times the model's own work in each candidate dtype, once:

- ``train``: training steps (:func:`seq2seq.training.step.train_step`: forward, loss, backward, clip, Adam)
  on a batch of ``train.max_tokens`` positions;
- ``decode``: encoding a batch and decoder steps for ``decode.batch_size x decode.beam_size`` hypotheses.

Candidates are fp32 and bf16 on a CPU; TF32, bf16 and fp16 on CUDA. Rounds alternate between the candidates
and each keeps its fastest round, so a burst of load from another process does not decide; a candidate more than
twice as slow as another (three times, in the warm-up round) is timed no further, which bounds the cost on a host
that emulates bf16. A less exact dtype
is chosen only when it is more than ``PREFER_MARGIN`` faster than a more exact one, which keeps ``auto`` within
a few percent of the fastest. The choice and its timings are cached in ``<data.cache_dir>/dtype-choices.json``
under a key naming the machine (the CPU by model, family / model / stepping and the ISA flags that decide bf16's
speed; the GPU by name and compute capability), torch version, threads, model shapes and workload, and logged
each time.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from seq2seq.config import ConfigError
from seq2seq.hardware import machine_name

logger = logging.getLogger(__name__)

#: autocast dtype per name (None: no autocast). ``tf32`` is fp32 storage with TF32 matmuls on CUDA.
AUTOCAST = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: most exact / safest first: ties go to the earlier one
PRECISION_ORDER = ("fp32", "tf32", "bf16", "fp16")
CANDIDATES = {"cpu": ("fp32", "bf16"), "cuda": ("tf32", "bf16", "fp16")}
PREFER_MARGIN = 0.03
CACHE_FILE = "dtype-choices.json"


@dataclass(frozen=True)
class ComputeDtypes:
    """A training run's resolved compute dtypes, by name (``fp32`` | ``tf32`` | ``bf16`` | ``fp16``): training's
    and validation decoding's."""

    train: str
    decode: str

    @property
    def train_amp(self) -> torch.dtype | None:
        return AUTOCAST[self.train]

    @property
    def decode_amp(self) -> torch.dtype | None:
        return AUTOCAST[self.decode]


def explicit_autocast(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a named compute dtype on ``device`` (None = no autocast). On CUDA it also sets the
    process's TF32 switches (:func:`apply_numerics`): ``tf32`` turns them on, every other dtype off."""
    if name not in AUTOCAST:
        raise ConfigError(f"unknown compute dtype {name!r}; choose one of auto, {', '.join(AUTOCAST)}")
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("dtype fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if device.type == "cuda":
        apply_numerics(name)
    return AUTOCAST[name]


def apply_numerics(name: str) -> None:
    """Set the process-wide TF32 switches of CUDA matmuls and cuDNN (its fused RNNs) for compute dtype ``name``:
    on for ``tf32``, off for every other, so that ``fp32`` means fp32 (torch turns cuDNN's TF32 on by default).
    They only affect CUDA kernels; training sets them on every rank, whatever the device."""
    torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
    torch.backends.cudnn.allow_tf32 = name == "tf32"


def numerics_flags() -> dict[str, bool]:
    """The TF32 switches this process runs with (reported by every training rank)."""
    return {"matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32}


@contextlib.contextmanager
def numerics(name: str) -> Iterator[None]:
    """:func:`apply_numerics` for ``name`` within the block; the previous switches afterwards."""
    previous = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    apply_numerics(name)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def decide(seconds: dict[str, float], margin: float = PREFER_MARGIN) -> str:
    """The most exact dtype whose time is within ``margin`` of the fastest (times in seconds per unit of work)."""
    fastest = min(seconds.values())
    for name in PRECISION_ORDER:
        if name in seconds and seconds[name] <= fastest * (1.0 + margin):
            return name
    raise ValueError(f"no known dtype among {sorted(seconds)}")  # pragma: no cover


def choose_autocast(requested: str, device: torch.device, model: torch.nn.Module, purpose: str, cache_dir: str | Path,
                    size: int, beam_size: int = 1) -> torch.dtype | None:
    """Resolve a configured dtype to an autocast dtype; ``auto`` measures (or reads the cached measurement).

    Args:
        requested: ``auto`` | ``fp32`` | ``tf32`` | ``bf16`` | ``fp16``.
        model: the model to time (a copy is timed; its weights and the global RNG are left untouched).
        purpose: ``train`` (``size`` = positions per batch) or ``decode`` (``size`` = sentences per batch).
        cache_dir: directory of the cache file.
        beam_size: hypotheses per sentence for ``decode``.
    """
    return AUTOCAST[choose_dtype(requested, device, model, purpose, cache_dir, size, beam_size)]


def choose_dtype(requested: str, device: torch.device, model: torch.nn.Module, purpose: str, cache_dir: str | Path,
                 size: int, beam_size: int = 1) -> str:
    """:func:`choose_autocast`, returning the dtype's name (``fp32`` | ``tf32`` | ``bf16`` | ``fp16``)."""
    name = requested if requested != "auto" else auto_dtype(device, model, purpose, cache_dir, size, beam_size)
    explicit_autocast(name, device)
    return name


def auto_dtype(device: torch.device, model: torch.nn.Module, purpose: str, cache_dir: str | Path, size: int,
               beam_size: int = 1) -> str:
    """The dtype name ``auto`` resolves to for this workload on this machine (measured once, then cached)."""
    key = workload_key(device, model, purpose, size, beam_size)
    cache_path = Path(cache_dir).expanduser() / CACHE_FILE
    entry = _read_cache(cache_path).get(key)
    if entry is not None and entry.get("choice") in CANDIDATES[device.type]:
        logger.info("dtype auto for %s: %s (cached measurement of %s: %s)", purpose, entry["choice"], entry["measured"],
                    _format(entry["seconds"]))
        return entry["choice"]
    seconds = measure(device, model, purpose, size, beam_size)
    choice = decide(seconds)
    logger.info("dtype auto for %s: %s, measured on %s (seconds per %s: %s)", purpose, choice, machine_name(device),
                "step" if purpose == "train" else "batch", _format(seconds))
    entry = {"choice": choice, "seconds": seconds, "measured": time.strftime("%Y-%m-%d %H:%M"),
             "machine": machine_name(device), "torch": torch.__version__}
    _write_cache(cache_path, key, entry)
    return choice


def _format(seconds: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in seconds.items())


def workload_key(device: torch.device, model: torch.nn.Module, purpose: str, size: int, beam_size: int) -> str:
    """Names everything the timing depends on: machine (:func:`seq2seq.hardware.machine_name`), torch, threads, parameter shapes,
    workload."""
    shapes = hashlib.sha256(json.dumps([[n, list(p.shape)] for n, p in model.named_parameters()]).encode())
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    return (f"{machine_name(device)} | torch {torch.__version__} | threads {threads} | model {shapes.hexdigest()[:12]}"
            f" | {purpose} {size}" + (f" beam {beam_size}" if purpose == "decode" else ""))


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, key: str, entry: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path)
        data[key] = entry
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:  # an unwritable cache costs a measurement next time, nothing else
        logger.warning("could not cache the dtype measurement in %s: %s", path, err)


# ---------------------------------------------------------------------------- timing
def measure(device: torch.device, model: torch.nn.Module, purpose: str, size: int, beam_size: int = 1,
            rounds: int = 3) -> dict[str, float]:
    """Seconds per unit of work for each candidate dtype: the fastest of ``rounds`` alternating rounds, after a
    warm-up round. A candidate clearly slower than another (:func:`clearly_slower`) is timed no further and keeps
    the time it took: a host that emulates bf16 at 1/20 of fp32's speed pays for one bf16 step, not four."""
    work = _training_work if purpose == "train" else _decoding_work
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the run's random streams are not consumed
        torch.manual_seed(0)
        runners = {name: work(copy.deepcopy(model), device, AUTOCAST[name], size, beam_size)
                   for name in CANDIDATES[device.type]}
        most_exact = next(iter(runners))  # never abandoned on its warm-up: it wins ties, and goes first
        warmup: dict[str, float] = {}
        best = {name: float("inf") for name in runners}
        abandoned: list[str] = []
        with numerics("fp32"):  # the switches as they were, afterwards
            for round_index in range(rounds + 1):  # round 0 warms up (allocations, kernel selection)
                for name, runner in runners.items():
                    if name in abandoned:
                        continue
                    if device.type == "cuda":
                        apply_numerics(name)
                        torch.cuda.synchronize(device)
                    start = time.perf_counter()
                    runner()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    seconds = time.perf_counter() - start
                    if round_index == 0:
                        warmup[name] = seconds
                        others = [warmup[other] for other in warmup if other != name]
                        if name != most_exact and clearly_slower(seconds, others, WARMUP_SLOWER):
                            best[name] = seconds
                            abandoned.append(name)
                        continue
                    best[name] = min(best[name], seconds)
                    others = [best[other] for other in best if other != name and other not in abandoned]
                    if clearly_slower(seconds, others, TIMED_SLOWER):
                        abandoned.append(name)
    if abandoned:
        logger.info("dtype auto for %s: stopped timing %s (clearly slower than %s)", purpose, ", ".join(abandoned),
                    ", ".join(name for name in runners if name not in abandoned))
    return {name: round(value, 5) for name, value in best.items()}


#: a timed run this many times the best time of another candidate: that candidate is clearly faster
TIMED_SLOWER = 2.0
#: the same for a warm-up run against the other candidates' warm-ups (first calls allocate and select kernels,
#: which costs each dtype differently: a wider margin)
WARMUP_SLOWER = 3.0


def clearly_slower(seconds: float, others: list[float], factor: float) -> bool:
    """Whether a run of ``seconds`` took more than ``factor`` times the fastest of the ``others`` (finite ones)."""
    finite = [other for other in others if other != float("inf")]
    return bool(finite) and seconds > factor * min(finite)


def _random_ids(rows: int, length: int, vocab_size: int, device: torch.device) -> torch.Tensor:
    return torch.randint(4, max(vocab_size, 5), (rows, length), device=device)  # ids 0-3 are special


def _training_work(model: torch.nn.Module, device: torch.device, amp: torch.dtype | None, size: int,
                   beam_size: int) -> Callable[[], None]:  # noqa: ARG001
    """One training step (:func:`seq2seq.training.step.train_step`, as training runs it) on a batch of ``size``
    positions (sentences of 20 source + 20 target pieces)."""
    from seq2seq.token_batches import Batch
    from seq2seq.training.step import Learner, StepSettings, train_step

    length = 20
    rows = max(1, size // (2 * length))
    src = _random_ids(rows, length, model.encoder.embedding.num_embeddings, device)
    tgt = _random_ids(rows, length, model.decoder.embedding.num_embeddings, device)
    lengths = torch.full((rows,), length, dtype=torch.long, device=device)
    batch = Batch(src, lengths, tgt, tgt, lengths)
    model.train()
    learner = Learner(model, torch.optim.Adam(model.parameters(), lr=1e-4),
                      StepSettings(label_smoothing=0.1, clip_norm=1.0), device, amp)
    return lambda: train_step(learner, [batch], rows * length)


def _decoding_work(model: torch.nn.Module, device: torch.device, amp: torch.dtype | None, size: int,
                   beam_size: int) -> Callable[[], None]:
    """Encoding ``size`` sentences of 20 pieces and 25 decoder steps for ``size * beam_size`` hypotheses, started
    and stepped as beam search does (:func:`seq2seq.decoding.search.start_beams`, ``Ensemble.step``)."""
    from seq2seq.decoding.ensemble import as_ensemble
    from seq2seq.decoding.search import start_beams

    length, steps = 20, 25
    src = _random_ids(size, length, model.encoder.embedding.num_embeddings, device)
    src_lengths = torch.full((size,), length, dtype=torch.long, device=device)
    ensemble = as_ensemble(model.eval())

    @torch.no_grad()
    def decode() -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            state, memory, _ = start_beams(ensemble, src, src_lengths, beam_size, None, share=True)
            tokens = torch.full((size * beam_size,), 2, dtype=torch.long, device=device)  # BOS
            for _ in range(steps):
                log_probs, state, _ = ensemble.step(tokens, state, memory)
                tokens = log_probs.argmax(dim=-1)

    return decode


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    return device
