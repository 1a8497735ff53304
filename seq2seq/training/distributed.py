"""Data-parallel training over several processes, started by ``torchrun``: NCCL between GPUs, gloo on CPUs.

``torchrun --nproc_per_node N -m seq2seq.train ...`` starts N copies of the training script; each finds its
``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` in the environment (:func:`from_environment`). Without them (a plain
``python -m seq2seq.train``) training runs in one process and nothing here communicates.

How the ranks stay in step (the rules :mod:`seq2seq.train` follows):

- Every rank builds the same epoch batches from ``(seed, epoch)``. A step takes ``world_size * accumulate``
  consecutive batches; rank r trains on the r-th run of ``accumulate`` of them. So W ranks equal one process that
  accumulates ``W * accumulate`` batches: the same batches, in the same order, the same loss normalisation (the
  target tokens of the whole step, which every rank can count from the batch lengths without communicating).
- Decisions that depend on a clock or a signal (the time budget, the learning rate under a time budget, periodic
  saves, Ctrl-C / SIGTERM) are rank 0's, shared once per step with the loss in one small all-reduce
  (:meth:`Distributed.agree`).
- Rank 0 prepares the data first (tokenizers, Arrow caches), then the first rank of each other node (its
  node's caches), then the rest, which only read them (:meth:`Distributed.in_turns`). Rank 0 alone validates,
  writes files and logs; the validation scores are broadcast so that every rank keeps the same best score,
  early-stopping count and learning-rate schedule.
- ``last/`` holds every rank's random-number state, so ``--resume`` under the same number of processes is exact.
- A collective that fails (a rank died, the network went down) or waits longer than ``train.dist_timeout``
  minutes raises :class:`DistributedError`, which names the rank and says how to continue.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NoReturn, TypeVar

import torch
import torch.distributed as dist

from seq2seq.training import TrainingError

T = TypeVar("T")


class DistributedError(TrainingError):
    """A collective operation failed or timed out: another rank died, or the network between ranks failed."""


@dataclass
class StepAgreement:
    """What every rank agrees on after a step's backward pass."""

    loss: float  #: summed loss of the whole step over all ranks (non-finite when any rank's was)
    elapsed: float  #: rank 0's seconds of training so far
    stop: bool  #: some rank was asked to stop (Ctrl-C / SIGTERM)
    save: bool  #: rank 0's ``train.save_every`` clock says save ``last/`` now


@dataclass
class Distributed:
    """This process's place among the training processes (one process: rank 0 of 1, and no communication)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: torch.device | None = None  #: the collective tensors' device (this rank's GPU under NCCL)
    out_dir: str = "OUT"  #: the run's output directory, named in error messages

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------------ collectives
    def agree(self, local_loss: float, elapsed: float, stop: bool, save: bool) -> StepAgreement:
        """Sum the ranks' step losses and take rank 0's clock and save decision, any rank's stop request."""
        if not self.enabled:
            return StepAgreement(local_loss, elapsed, stop, save)
        main = float(self.is_main)
        values = torch.tensor([local_loss, elapsed * main, float(stop), float(save) * main], dtype=torch.float64,
                              device=self.device)
        with self.reporting("exchanging the step's loss"):
            dist.all_reduce(values)
            loss, elapsed, stop_votes, save_votes = values.tolist()  # NCCL: the wait for the other ranks is here
        return StepAgreement(loss, elapsed, stop_votes > 0, save_votes > 0)

    def from_main(self, compute: Callable[[], Any], what: str) -> Any:
        """``compute()`` on rank 0 and its result on every rank, the others waiting for it. The result must be
        JSON-able; it travels as UTF-8 JSON in a byte tensor (never pickled), and every rank, rank 0 included,
        gets the value as JSON reads it back (lists for tuples), so all ranks go on with equal values."""
        if not self.enabled:
            return json_round_trip(compute())
        payload = json_bytes(compute()) if self.is_main else torch.empty(0, dtype=torch.uint8)
        with self.reporting(f"waiting for rank 0 ({what})"):
            size = torch.tensor([payload.numel()], dtype=torch.int64, device=self.device)
            dist.broadcast(size, src=0)
            buffer = payload.to(self.device) if self.is_main else torch.empty(int(size.item()), dtype=torch.uint8,
                                                                              device=self.device)
            dist.broadcast(buffer, src=0)
        return from_json_bytes(buffer)

    def gather(self, value: Any, what: str) -> list[Any]:
        """Every rank's JSON-able ``value``, in rank order, on every rank (as JSON reads it back; never pickled)."""
        if not self.enabled:
            return [json_round_trip(value)]
        payload = json_bytes(value).to(self.device)
        with self.reporting(what):
            size = torch.tensor([payload.numel()], dtype=torch.int64, device=self.device)
            sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
            dist.all_gather(sizes, size)
            longest = max(int(s.item()) for s in sizes)
            padded = torch.zeros(longest, dtype=torch.uint8, device=self.device)
            padded[: payload.numel()] = payload
            buffers = [torch.empty_like(padded) for _ in range(self.world_size)]
            dist.all_gather(buffers, padded)
        return [from_json_bytes(buffer[: int(n.item())]) for buffer, n in zip(buffers, sizes)]

    def barrier(self, what: str) -> None:
        if self.enabled:
            with self.reporting(what):
                dist.barrier()

    def in_turns(self, prepare: Callable[[], T], what: str) -> T:
        """``prepare()`` on every rank, in three turns: rank 0 (it trains the tokenizers into the output directory
        and fills its node's caches), then the first rank of every other node (its node's caches, when
        ``data.cache_dir`` is not shared), then all the others (they only read)."""
        if not self.enabled:
            return prepare()
        turn = 0 if self.is_main else 1 if self.local_rank == 0 else 2
        result: T | None = None
        for current in range(3):
            if current == turn:
                result = prepare()
            self.barrier(f"waiting for the ranks that go first ({what})")
        return result  # type: ignore[return-value]

    @contextlib.contextmanager
    def reporting(self, what: str) -> Iterator[None]:
        """Turn a failed collective into a :class:`DistributedError` that says what to do (one process: nothing).
        Any other error (a bug, out of memory, a failure inside autograd) goes on as it is."""
        if not self.enabled:
            yield
            return
        try:
            yield
        except (RuntimeError, dist.DistError) as err:
            if not is_collective_failure(err):
                raise
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: lost contact with the other training processes while "
                f"{what}: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}. "
                "Another rank failed (see its error above) or the network between nodes broke, or a rank waited "
                f"longer than train.dist_timeout minutes. The latest training state is in {self.out_dir}/last: "
                "continue with --resume and the same number of processes"
            ) from err

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


#: where the messages of a failed gloo / NCCL collective come from (gloo raises a plain RuntimeError naming its
#: source file, e.g. "[.../gloo/transport/tcp/pair.cc:553] Connection closed by peer"; NCCL a DistBackendError)
COLLECTIVE_SOURCES = ("gloo", "nccl", "c10d", "processgroup")


def is_collective_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective's failure (a lost peer, a timeout), not an error of this rank's own work."""
    if isinstance(err, (TrainingError, torch.OutOfMemoryError)):
        return False
    if isinstance(err, dist.DistError):
        return True
    return isinstance(err, RuntimeError) and any(source in str(err).lower() for source in COLLECTIVE_SOURCES)


def exit_process(code: int) -> NoReturn:
    """End the training process with ``code``. A rank of a data-parallel run (``WORLD_SIZE`` > 1) flushes its logs
    and output and ends without the interpreter's teardown (``os._exit``).

    Why: DistributedDataParallel keeps its gloo process group alive past ``destroy_process_group`` (with torch 2.13
    the group's worker threads are still running at exit), and a worker thread that lets go of a finished
    collective's tensor while the interpreter is shutting down aborts the process (``terminate called without an
    active exception``, exit -6), after a run that ended well. Everything a rank writes is closed before this point.
    """
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing left to flush to
                stream.flush()
        os._exit(code)
    sys.exit(code)


def from_environment(device_setting: str, timeout_minutes: float) -> tuple[Distributed, torch.device | None]:
    """This process's :class:`Distributed` from torchrun's environment variables, with the process group started,
    and the device it trains on under several processes (``cuda:LOCAL_RANK`` or the CPU; None for one process,
    which then resolves ``train.device`` as usual)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1:
        return Distributed(), None
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    except (KeyError, ValueError) as err:
        raise TrainingError(f"WORLD_SIZE = {world_size} but RANK / LOCAL_RANK are missing or not numbers ({err}); "
                            "start several processes with torchrun --nproc_per_node N -m seq2seq.train ...") from None
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size) or world_size)
    use_cuda = device_setting == "cuda" or (device_setting == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise TrainingError(f"rank {rank} wants GPU {local_rank} (LOCAL_RANK) but this machine has "
                                f"{torch.cuda.device_count()}; start at most that many processes per node "
                                "(torchrun --nproc_per_node) or train on the CPU (--device cpu)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    timeout = datetime.timedelta(minutes=timeout_minutes)
    try:
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world_size, timeout=timeout)
    except (RuntimeError, ValueError, dist.DistError) as err:
        raise DistributedError(f"rank {rank} of {world_size}: could not join the other training processes "
                               f"({type(err).__name__}: {err}); check MASTER_ADDR / MASTER_PORT or torchrun's "
                               "--rdzv-endpoint, and that every node can reach it") from None
    return Distributed(rank, local_rank, world_size, local_world_size, device if use_cuda else None), device


def json_bytes(value: Any) -> torch.Tensor:
    """``value`` as UTF-8 JSON in a (N,) uint8 CPU tensor; TypeError for what JSON cannot hold."""
    data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def from_json_bytes(tensor: torch.Tensor) -> Any:
    return json.loads(bytes(tensor.cpu().numpy().tobytes()).decode("utf-8"))


def json_round_trip(value: Any) -> Any:
    """``value`` as another rank would receive it."""
    return from_json_bytes(json_bytes(value))
