"""Compute dtypes, and ``dtype: auto`` chosen by measurement on the machine at hand.

CPU flags do not say which dtype is faster: one Intel Xeon lists ``avx512_bf16`` yet runs bf16 matmul at half
of fp32's speed, while an AMD EPYC runs it at twice; on a GPU, small launch-bound steps can make bf16 autocast
slower than fp32. So ``auto`` times the model's own work in each candidate dtype, once. The work is handed in
(:class:`TimedWork`) by the code that owns it, so this module imports nothing above it:

- ``train`` (:func:`seq2seq.training.step.training_work`): training steps (forward, loss, backward, clip, Adam)
  on a batch of ``train.max_tokens`` positions;
- ``decode`` (:func:`seq2seq.decoding.search.decoding_work`): encoding a batch and decoder steps for
  ``decode.batch_size x decode.beam_size`` hypotheses.

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

from seq2seq.config import DTYPES, ConfigError
from seq2seq.hardware import machine_name
from seq2seq.tokenizer import SPECIAL_IDS

logger = logging.getLogger(__name__)

#: the config's compute dtypes less ``auto`` (:data:`seq2seq.config.DTYPES`), most exact / safest first: ties go to
#: the earlier one
PRECISION_ORDER = tuple(name for name in DTYPES if name != "auto")
#: autocast dtype per name (None: no autocast). ``tf32`` is fp32 storage with TF32 matmuls on CUDA.
AUTOCAST = {name: {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name) for name in PRECISION_ORDER}
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


@dataclass(frozen=True)
class TimedWork:
    """The work ``dtype: auto`` times, handed in by the code that owns it (:func:`seq2seq.training.step.training_work`,
    :func:`seq2seq.decoding.search.decoding_work`).

    Attributes:
        purpose: what the choice is for, in the log: ``train`` | ``decode``.
        sizes: the workload's sizes (``4096``: positions per batch; ``32 beam 5``: sentences and hypotheses), part
            of the cache key with ``purpose``.
        unit: what one run of the work is, in the log: ``step`` | ``batch``.
        prepare: ``prepare(model, device, amp)`` -> a callable that runs the work once under autocast dtype ``amp``
            (None: no autocast) on ``model``, a copy it may change.
    """

    purpose: str
    sizes: str
    unit: str
    prepare: Callable[[torch.nn.Module, torch.device, torch.dtype | None], Callable[[], None]]

    @property
    def name(self) -> str:
        return f"{self.purpose} {self.sizes}"


def choose_autocast(requested: str, device: torch.device, model: torch.nn.Module, work: TimedWork,
                    cache_dir: str | Path) -> torch.dtype | None:
    """Resolve a configured dtype to an autocast dtype; ``auto`` measures (or reads the cached measurement).

    Args:
        requested: ``auto`` | ``fp32`` | ``tf32`` | ``bf16`` | ``fp16``.
        model: the model to time (a copy is timed; its weights and the global RNG are left untouched).
        work: what to time, in each candidate dtype.
        cache_dir: directory of the cache file.
    """
    return AUTOCAST[choose_dtype(requested, device, model, work, cache_dir)]


def choose_dtype(requested: str, device: torch.device, model: torch.nn.Module, work: TimedWork,
                 cache_dir: str | Path) -> str:
    """:func:`choose_autocast`, returning the dtype's name (``fp32`` | ``tf32`` | ``bf16`` | ``fp16``)."""
    name = requested if requested != "auto" else auto_dtype(device, model, work, cache_dir)
    explicit_autocast(name, device)
    return name


def auto_dtype(device: torch.device, model: torch.nn.Module, work: TimedWork, cache_dir: str | Path) -> str:
    """The dtype name ``auto`` resolves to for this work on this machine (measured once, then cached)."""
    key = workload_key(device, model, work)
    cache_path = Path(cache_dir).expanduser() / CACHE_FILE
    entry = _read_cache(cache_path).get(key)
    if entry is not None and entry.get("choice") in CANDIDATES[device.type]:
        logger.info("dtype auto for %s: %s (cached measurement of %s: %s)", work.purpose, entry["choice"],
                    entry["measured"], _format(entry["seconds"]))
        return entry["choice"]
    seconds = measure(device, model, work)
    choice = decide(seconds)
    logger.info("dtype auto for %s: %s, measured on %s (seconds per %s: %s)", work.purpose, choice,
                machine_name(device), work.unit, _format(seconds))
    entry = {"choice": choice, "seconds": seconds, "measured": time.strftime("%Y-%m-%d %H:%M"),
             "machine": machine_name(device), "torch": torch.__version__}
    _write_cache(cache_path, key, entry)
    return choice


def _format(seconds: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in seconds.items())


def workload_key(device: torch.device, model: torch.nn.Module, work: TimedWork) -> str:
    """Names everything the timing depends on: machine (:func:`seq2seq.hardware.machine_name`), torch, threads,
    parameter shapes, workload."""
    shapes = hashlib.sha256(json.dumps([[n, list(p.shape)] for n, p in model.named_parameters()]).encode())
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    return (f"{machine_name(device)} | torch {torch.__version__} | threads {threads} | model {shapes.hexdigest()[:12]}"
            f" | {work.name}")


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
def measure(device: torch.device, model: torch.nn.Module, work: TimedWork, rounds: int = 3) -> dict[str, float]:
    """Seconds per unit of work for each candidate dtype: the fastest of ``rounds`` alternating rounds, after a
    warm-up round. A candidate clearly slower than another (:func:`clearly_slower`) is timed no further and keeps
    the time it took: a host that emulates bf16 at 1/20 of fp32's speed pays for one bf16 step, not four."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the run's random streams are not consumed
        torch.manual_seed(0)
        runners = {name: work.prepare(copy.deepcopy(model), device, AUTOCAST[name])
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
        logger.info("dtype auto for %s: stopped timing %s (clearly slower than %s)", work.purpose, ", ".join(abandoned),
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


def random_ids(rows: int, length: int, vocab_size: int, device: torch.device) -> torch.Tensor:
    """(rows, length) random piece ids for timed work, special ids (:data:`seq2seq.tokenizer.SPECIAL_IDS`) left out."""
    first = len(SPECIAL_IDS)
    return torch.randint(first, max(vocab_size, first + 1), (rows, length), device=device)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    return device
