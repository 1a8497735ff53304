"""``dtype: auto``: the compute dtype chosen by timing the model's own work on the machine at hand, within a time
budget, once per machine and model shape.

CPU flags do not say which dtype is faster: one Intel Xeon lists ``avx512_bf16`` yet runs bf16 matmul at half
of fp32's speed, while an AMD EPYC runs it at twice; on a GPU, small launch-bound steps can make bf16 autocast
slower than fp32. So ``auto`` times the model's own work in each candidate dtype, once. The work is handed in
(:class:`TimedWork`) by the code that owns it, so this module imports nothing above it:

- ``train`` (:func:`seq2seq.training.step.training_work`): training steps (forward, loss, backward, clip, Adam)
  on a batch of ``train.max_tokens`` positions;
- ``decode`` (:func:`seq2seq.decoding.search.decoding_work`): encoding a batch and decoder steps for
  ``decode.batch_size x decode.beam_size`` hypotheses.

Candidates are fp32 and bf16 on a CPU; TF32, bf16 and fp16 on CUDA. The measurement (:func:`measure`) is bounded:

1. a **probe** first times the work on :data:`PROBE_ROWS` rows (sentences) in each candidate: one more than
   :data:`PROBE_SLOWER` times slower than another is timed no further (a host that emulates bf16 at 1/20 of
   fp32's speed pays for a few rows of bf16, not a whole step);
2. the whole work then runs in alternating rounds after a warm-up round, each candidate keeping its fastest
   round, so a burst of load from another process does not decide; a candidate whose best run is more than
   twice another's (three times, in the warm-up round) is timed no further;
3. before every run its time is predicted (its last run at that size; else its probe, scaled as the whole work
   scaled another candidate's probe, or by the rows; a first probe like the others' first) and a run that would
   end past the work's budget
   (:attr:`TimedWork.budget`: 10 s for training, 5 s for decoding) is not started. If the budget runs out before
   the remaining candidates each have a timed run of the whole work, ``auto`` takes the most exact candidate (fp32
   on a CPU) and says so in the log.

A less exact dtype is chosen only when it is more than ``PREFER_MARGIN`` faster than a more exact one, which keeps
``auto`` within a few percent of the fastest. A line before measuring says what is timed, why, and how to skip it
(:attr:`TimedWork.skip`); the choice and its timings are cached in ``<data.cache_dir>/dtype-choices.json`` under a
key naming the machine (the CPU by model, family / model / stepping and the ISA flags that decide bf16's speed;
the GPU by name and compute capability), torch version, threads, model shapes and workload, and logged each time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from seq2seq.hardware import machine_name
from seq2seq.precision import AUTOCAST, PRECISION_ORDER, apply_numerics, explicit_autocast, numerics
from seq2seq.tokenizer import SPECIAL_IDS

logger = logging.getLogger(__name__)

#: what ``auto`` times on each device type, most exact first (the fallback when the budget runs out)
CANDIDATES = {"cpu": ("fp32", "bf16"), "cuda": ("tf32", "bf16", "fp16")}
PREFER_MARGIN = 0.03
CACHE_FILE = "dtype-choices.json"
#: rows (sentences) of the probe that comes before the whole work; work of at most twice as many rows has none
PROBE_ROWS = 4
#: a timed run this many times the best time of another candidate: that candidate is clearly faster
TIMED_SLOWER = 2.0
#: the same for a warm-up run against the other candidates' warm-ups (first calls allocate and select kernels,
#: which costs each dtype differently: a wider margin)
WARMUP_SLOWER = 3.0
#: the same on the probe's few rows, where fixed costs (autocast's casts, kernel launches) weigh more than in the
#: whole work: a wider margin
PROBE_SLOWER = 3.0


@dataclass(frozen=True)
class TimedWork:
    """The work ``dtype: auto`` times, handed in by the code that owns it (:func:`seq2seq.training.step.training_work`,
    :func:`seq2seq.decoding.search.decoding_work`).

    Attributes:
        purpose: what the choice is for, in the log: ``train`` | ``decode``.
        sizes: the workload's sizes (``4096``: positions per batch; ``32 beam 5``: sentences and hypotheses), part
            of the cache key with ``purpose``.
        unit: what one run of the work is, in the log: ``step`` | ``batch``.
        rows: the sentences of the whole work (the probe runs :data:`PROBE_ROWS` of them).
        prepare: ``prepare(model, device, amp, rows)`` -> a callable that runs the work once on ``rows`` sentences
            under autocast dtype ``amp`` (None: no autocast) on ``model``, a copy it may change.
        what: the work in words, in the log (``a training step of 2048 positions``).
        skip: how a user skips the measurement, in the log (``--set train.dtype=fp32 (or bf16)``).
        budget: the most seconds the measurement may take (a run predicted to end past it is not started).
    """

    purpose: str
    sizes: str
    unit: str
    rows: int
    prepare: Callable[[torch.nn.Module, torch.device, torch.dtype | None, int], Callable[[], None]]
    what: str = ""
    skip: str = ""
    budget: float = 10.0

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


def decide(seconds: dict[str, float], margin: float = PREFER_MARGIN) -> str:
    """The most exact dtype whose time is within ``margin`` of the fastest (times in seconds per unit of work)."""
    fastest = min(seconds.values())
    for name in PRECISION_ORDER:
        if name in seconds and seconds[name] <= fastest * (1.0 + margin):
            return name
    raise ValueError(f"no known dtype among {sorted(seconds)}")  # pragma: no cover


def auto_dtype(device: torch.device, model: torch.nn.Module, work: TimedWork, cache_dir: str | Path) -> str:
    """The dtype name ``auto`` resolves to for this work on this machine (measured once, then cached)."""
    key = workload_key(device, model, work)
    cache_path = Path(cache_dir).expanduser() / CACHE_FILE
    entry = _read_cache(cache_path).get(key)
    if entry is not None and entry.get("choice") in CANDIDATES[device.type]:
        how = "; its measurement ran out of time: the most exact" if entry.get("fallback") else ""
        logger.info("dtype auto for %s: %s (cached measurement of %s, %s%s)", work.purpose, entry["choice"],
                    entry["measured"], _figures(entry, work.unit), how)
        return entry["choice"]
    candidates = CANDIDATES[device.type]
    logger.info("dtype auto for %s: timing %s on %s, to use the faster on this machine for this model shape (at "
                "most about %.0f s, once: the choice is cached in %s); to skip it, %s", work.purpose,
                " and ".join(candidates), work.what or work.name, work.budget, cache_path, work.skip or "name a dtype")
    measured = measure(device, model, work)
    choice = measured.choice()
    entry = {"choice": choice or candidates[0], "fallback": choice is None, "seconds": _rounded(measured.whole),
             "probe_seconds": _rounded(measured.probe), "rows": measured.rows, "probe_rows": measured.probe_rows,
             "measured": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_name(device), "torch": torch.__version__}
    if measured.abandoned:
        logger.info("dtype auto for %s: stopped timing %s (clearly slower than %s)", work.purpose,
                    ", ".join(measured.abandoned), ", ".join(n for n in candidates if n not in measured.abandoned))
    if choice is None:
        logger.warning("dtype auto for %s: measuring %s would take longer than its %.0f s budget on this machine "
                       "(spent %.1f s, %s); using %s, the most exact. To use another, %s", work.purpose,
                       " and ".join(candidates), work.budget, measured.spent, _figures(entry, work.unit),
                       entry["choice"], work.skip or "name a dtype")
    else:
        logger.info("dtype auto for %s: %s, measured on %s in %.1f s (%s)", work.purpose, choice,
                    machine_name(device), measured.spent, _figures(entry, work.unit))
    _write_cache(cache_path, key, entry)
    return entry["choice"]


def _rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 5) for name, value in seconds.items()}


def _figures(entry: dict, unit: str) -> str:
    """A cache entry's timings in words: ``seconds per step: fp32 0.4318, bf16 0.2539; on 4 of 102 rows: ...``."""
    parts = []
    if entry.get("seconds"):
        parts.append(f"seconds per {unit}: " + ", ".join(f"{n} {v:.4f}" for n, v in entry["seconds"].items()))
    if entry.get("probe_seconds"):
        parts.append(f"on {entry.get('probe_rows')} of {entry.get('rows')} rows: "
                     + ", ".join(f"{n} {v:.4f}" for n, v in entry["probe_seconds"].items()))
    return "; ".join(parts) or "nothing timed"


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
@dataclass
class Measurement:
    """What :func:`measure` found: per candidate, its best seconds per run on the probe's rows and on the whole
    work (a warm-up where it had no timed run), the candidates timed no further, and whether the budget ran out."""

    candidates: tuple[str, ...]
    rows: int
    probe_rows: int  #: 0: no probe (the work has few rows)
    probe: dict[str, float] = field(default_factory=dict)
    whole: dict[str, float] = field(default_factory=dict)
    timed: set[str] = field(default_factory=set)  #: candidates with a timed (not warm-up) run of the whole work
    abandoned: list[str] = field(default_factory=list)
    out_of_time: bool = False
    spent: float = 0.0

    def choice(self) -> str | None:
        """The one candidate left, or :func:`decide` among those left when each has a timed run of the whole
        work; None when the budget ran out before that (the caller takes the most exact)."""
        left = [name for name in self.candidates if name not in self.abandoned]
        if len(left) == 1:
            return left[0]
        if all(name in self.timed for name in left):
            return decide({name: self.whole[name] for name in left})
        return None


class _Clock:
    """Seconds spent since the measurement began, against the budget."""

    def __init__(self, budget: float) -> None:
        self.start, self.budget = time.perf_counter(), budget

    def spent(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, predicted: float | None) -> bool:
        """Whether a run predicted to take ``predicted`` seconds (None: unknown) ends within the budget."""
        return self.spent() + (predicted or 0.0) <= self.budget


def measure(device: torch.device, model: torch.nn.Module, work: TimedWork, rounds: int = 3) -> Measurement:
    """Time each candidate dtype on ``work`` within ``work.budget`` seconds: the probe on a few rows, then the
    whole work, each a warm-up round and alternating timed rounds (``rounds`` of the whole work, one of the
    probe). A candidate clearly slower than another (:func:`clearly_slower`) is timed no further."""
    measured = Measurement(CANDIDATES[device.type], work.rows,
                           PROBE_ROWS if work.rows > 2 * PROBE_ROWS else 0)
    clock = _Clock(work.budget)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the run's random streams are not consumed
        torch.manual_seed(0)
        with numerics("fp32"):  # the switches as they were, afterwards
            if measured.probe_rows:
                measured.probe = _time_rounds(measured, measured.probe_rows, 1, (PROBE_SLOWER, PROBE_SLOWER),
                                              device, model, work, clock)
            if not measured.out_of_time and len(measured.candidates) - len(measured.abandoned) > 1:
                measured.whole = _time_rounds(measured, work.rows, rounds, (WARMUP_SLOWER, TIMED_SLOWER),
                                              device, model, work, clock)
    measured.spent = clock.spent()
    return measured


def _time_rounds(measured: Measurement, rows: int, rounds: int, slower: tuple[float, float], device: torch.device,
                 model: torch.nn.Module, work: TimedWork, clock: _Clock) -> dict[str, float]:
    """A warm-up round and ``rounds`` timed rounds of the candidates not yet abandoned, on ``rows`` rows; each
    candidate's best timed run (its warm-up where it has none). ``slower``: the warm-up's and the timed runs'
    factors of :func:`clearly_slower`. Sets ``measured.out_of_time`` and stops when a run would end past the
    budget."""
    warmup_slower, timed_slower = slower
    most_exact = measured.candidates[0]  # never abandoned on its warm-up: it wins ties, and goes first
    runners: dict[str, Callable[[], None]] = {}
    warmup: dict[str, float] = {}
    best: dict[str, float] = {}
    last: dict[str, float] = {}

    def predicted(name: str) -> float | None:
        if name in last:
            return last[name]
        if name not in measured.probe:  # its first run on the probe's rows: like the others' first, if any ran
            return min(warmup.values(), default=None)
        scaled = [warmup[other] / measured.probe[other] for other in warmup if measured.probe.get(other)]
        return measured.probe[name] * (scaled[0] if scaled else rows / max(measured.probe_rows, 1))

    for round_index in range(rounds + 1):  # round 0 warms up (allocations, kernel selection)
        for name in measured.candidates:
            if name in measured.abandoned:
                continue
            if not clock.allows(predicted(name)):
                measured.out_of_time = True
                return {other: best.get(other, warmup[other]) for other in warmup}
            if name not in runners:
                runners[name] = work.prepare(copy.deepcopy(model), device, AUTOCAST[name], rows)
            seconds = last[name] = _run_once(runners[name], name, device)
            if round_index == 0:
                warmup[name] = seconds
                others = [warmup[other] for other in warmup if other != name]
                if name != most_exact and clearly_slower(seconds, others, warmup_slower):
                    measured.abandoned.append(name)
                continue
            best[name] = min(best.get(name, float("inf")), seconds)
            if rows == measured.rows:
                measured.timed.add(name)
            others = [best[other] for other in best if other != name and other not in measured.abandoned]
            # its best run, not this one: one run slowed by the host must not drop a candidate whose best is the
            # fastest (it was then logged as "clearly slower" and chosen all the same)
            if clearly_slower(best[name], others, timed_slower):
                measured.abandoned.append(name)
    return {name: best.get(name, warmup[name]) for name in warmup}


def _run_once(runner: Callable[[], None], name: str, device: torch.device) -> float:
    """Seconds one run of ``runner`` takes in compute dtype ``name`` (CUDA: its numerics, synchronized)."""
    if device.type == "cuda":
        apply_numerics(name)
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    runner()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def clearly_slower(seconds: float, others: list[float], factor: float) -> bool:
    """Whether a run of ``seconds`` took more than ``factor`` times the fastest of the ``others`` (finite ones)."""
    finite = [other for other in others if other != float("inf")]
    return bool(finite) and seconds > factor * min(finite)


def random_ids(rows: int, length: int, vocab_size: int, device: torch.device) -> torch.Tensor:
    """(rows, length) random piece ids for timed work, special ids (:data:`seq2seq.tokenizer.SPECIAL_IDS`) left out."""
    first = len(SPECIAL_IDS)
    return torch.randint(first, max(vocab_size, first + 1), (rows, length), device=device)
