"""Data-parallel training on the CPU with gloo: several processes equal one that accumulates their batches,
resume is exact, and a rank that dies or hangs stops the others with a clear error.

The runs are real: ``torchrun`` (or two processes given torchrun's environment variables by hand) training the
tiny recipe on ``tiny_corpus``, one thread each.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SUBPROCESS_ENV, TINY_OVERRIDES
from support.runs import (
    assert_same_weights,
    losses_by_step,
    reuse_tokenizers,
    tiny_config,
)

from seq2seq.training.distributed import Distributed, StepAgreement
from seq2seq.train import train

pytestmark = pytest.mark.slow

#: 2,000 tiny_corpus pairs make 93 batches an epoch: two ranks take 47 steps, the last with one batch (rank 1
#: then joins with a zero-weight batch), and 50 steps cross into the second epoch
STEPS = 50


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_args(corpus: Path, cache: Path, out: Path, *overrides: str) -> list[str]:
    settings = [f"data.cache_dir={cache}", "data.test_splits=[]", *TINY_OVERRIDES, "train.log_every=1",
                "train.valid_every=1000", "train.valid_bleu_sentences=5", *overrides]
    return ["-m", "seq2seq.train", "--data", str(corpus), "--out", str(out),
            *[arg for setting in settings for arg in ("--set", setting)]]


def torchrun(args: list[str], processes: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
    return subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=timeout)


def start_ranks(args: list[str], world_size: int = 2) -> list[subprocess.Popen]:
    """The ranks of a run started by hand with torchrun's environment variables (no torchrun agent watching)."""
    port, ranks = free_port(), []
    for rank in range(world_size):
        env = {**SUBPROCESS_ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world_size)}
        ranks.append(subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    return ranks


def wait_for_step(out: Path, step: int, ranks: list[subprocess.Popen], limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if (out / "train_log.jsonl").is_file() and max(losses_by_step(out), default=0) >= step:
            return
        if any(rank.poll() is not None for rank in ranks):
            pytest.fail(f"a rank ended before step {step}: {[r.communicate()[1][-2000:] for r in ranks]}")
        time.sleep(0.1)
    pytest.fail(f"step {step} not reached in {limit} s")


@pytest.fixture(scope="module")
def runs(tiny_corpus, tmp_path_factory):
    """A directory for runs, one Arrow cache, and tokenizers trained once."""
    root = tmp_path_factory.mktemp("distributed")
    cache = root / "cache"
    tokenizers = root / "tokenizers"
    train(tiny_config(tiny_corpus, cache, "train.max_steps=1", "train.valid_bleu_sentences=2"), tokenizers)
    return root, cache, tokenizers


def new_run(runs, name: str) -> Path:
    root, _, tokenizers = runs
    reuse_tokenizers(tokenizers, root / name)
    return root / name


@pytest.fixture(scope="module")
def accumulated(tiny_corpus, runs) -> Path:
    """One process accumulating two batches a step (dropout 0), the reference for the two-rank runs."""
    _, cache, _ = runs
    one = new_run(runs, "one")
    single = subprocess.run([sys.executable, *train_args(tiny_corpus, cache, one, f"train.max_steps={STEPS}",
                                                        "train.accumulate=2")],
                            env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    # fp32 means fp32: the TF32 switches off, cuDNN's (on by default in torch) included
    assert [line["numerics"] for line in summaries(single.stdout)] == [{"matmul_tf32": False, "cudnn_tf32": False}]
    return one


def summaries(stdout: str) -> list[dict]:
    """The JSON summary line each rank prints at the end of the run."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def assert_same_run(reference: Path, run: Path) -> None:
    """Step by step the same logged losses, and the same final weights (1e-6 on each; on this CPU they come out bit
    for bit equal). The log keeps a loss to 4 decimals (training/step.py), so the losses are compared as logged:
    equal after rounding, which shows the runs agree to about 1e-4 at every step; the weights are the exact check."""
    import safetensors.torch

    expected, losses = losses_by_step(reference), losses_by_step(run)
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert losses[step] == expected[step], f"logged loss differs at step {step}"
    a = safetensors.torch.load_file(str(reference / "last" / "model.safetensors"))
    b = safetensors.torch.load_file(str(run / "last" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=f"{name} differs")


def test_two_ranks_equal_one_process_accumulating_two_batches(tiny_corpus, runs, accumulated):
    """torchrun --nproc_per_node 2 at accumulate 1 = one process at accumulate 2 (dropout 0: the ranks' own random
    streams do not enter), across the end of an epoch. In tf32 (plain fp32 on the CPU): every rank runs with the
    TF32 switches on, not rank 0 alone (which resolves the dtypes)."""
    _, cache, _ = runs
    two = new_run(runs, "two")
    double = torchrun(train_args(tiny_corpus, cache, two, f"train.max_steps={STEPS}", "train.dtype=tf32"))
    assert double.returncode == 0, double.stderr[-3000:]
    assert [line["numerics"] for line in summaries(double.stdout)] == [{"matmul_tf32": True, "cudnn_tf32": True}] * 2
    assert "data parallel over 2 processes (gloo)" in (two / "train.log").read_text(encoding="utf-8")
    assert_same_run(accumulated, two)
    state = json.loads((two / "last" / "state.json").read_text(encoding="utf-8"))
    assert (state["epoch"], state["world_size"]) == (1, 2)  # the run crossed an epoch end


def test_two_nodes_with_their_own_caches_equal_one_process(tiny_corpus, runs, accumulated):
    """Two torchrun agents on one machine standing in for two nodes (c10d rendezvous, one process each), each
    node with its own data.cache_dir (filled by its first rank): the same run again."""
    root, cache, _ = runs
    out = new_run(runs, "two_nodes")
    port = free_port()
    agents = []
    for node in range(2):
        args = train_args(tiny_corpus, root / f"node{node}_cache", out, f"train.max_steps={STEPS}")
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                   "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=test", *args]
        agents.append(subprocess.Popen(command, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True))
    outputs = [agent.communicate(timeout=300) for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], [err[-3000:] for _, err in outputs]
    assert_same_run(accumulated, out)
    for node in range(2):  # every node tokenized into its own cache
        assert list((root / f"node{node}_cache").glob("tokenized-*.arrow"))


def test_two_ranks_stopped_by_sigterm_resume_exactly(tiny_corpus, runs):
    """Dropout 0.1 (each rank's random stream matters): SIGTERM to both ranks mid-run stops them at one step
    boundary with last/ saved; --resume under torchrun ends with the same weights, bit for bit, as the
    uninterrupted two-rank run."""
    _, cache, _ = runs
    settings = [f"train.max_steps={STEPS}", "model.dropout=0.1"]
    full, stopped = new_run(runs, "full"), new_run(runs, "stopped")
    uninterrupted = torchrun(train_args(tiny_corpus, cache, full, *settings))
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    ranks = start_ranks(train_args(tiny_corpus, cache, stopped, *settings))
    wait_for_step(stopped, 3, ranks)
    for rank in ranks:
        rank.send_signal(signal.SIGTERM)
    codes = [rank.wait(timeout=120) for rank in ranks]
    assert codes == [130, 130], [rank.communicate()[1][-2000:] for rank in ranks]  # 130: interrupted, state saved
    saved_step = json.loads((stopped / "last" / "state.json").read_text(encoding="utf-8"))["step"]
    assert 3 <= saved_step < STEPS

    resumed = torchrun([*train_args(tiny_corpus, cache, stopped, *settings), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {stopped / 'last'} at step {saved_step}" in (stopped / "train.log").read_text("utf-8")
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert_same_weights(full / "last" / name, stopped / "last" / name)

    one_process = subprocess.run([sys.executable, *train_args(tiny_corpus, cache, full, *settings), "--resume"],
                                 env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert one_process.returncode == 2
    assert "saved by a run of 2 process(es), and this one has 1" in one_process.stderr


def test_a_rank_that_dies_stops_the_others_with_a_clear_error(tiny_corpus, runs):
    """Rank 1 killed (SIGKILL) mid-training: rank 0 exits 2 at once, naming the failure and how to resume; no
    hang. Started without torchrun, so nothing but rank 0's own error handling ends it."""
    _, cache, _ = runs
    out = new_run(runs, "killed")
    ranks = start_ranks(train_args(tiny_corpus, cache, out, "train.max_steps=100000"))
    wait_for_step(out, 2, ranks)
    ranks[1].kill()
    code = ranks[0].wait(timeout=120)
    stderr = ranks[0].communicate()[1]
    assert code == 2, stderr[-3000:]
    assert "error: rank 0 of 2: lost contact with the other training processes" in stderr
    assert f"{out}/last: continue with --resume" in stderr
    assert "Traceback" not in stderr


def test_a_rank_that_hangs_times_out_with_a_clear_error(tiny_corpus, runs):
    """Rank 1 frozen (SIGSTOP): rank 0 gives up after train.dist_timeout minutes with the same
    clear error instead of waiting for ever (0.3 minutes here: long enough for rank 0 to prepare the tiny corpus on a
    loaded machine while rank 1 waits)."""
    _, cache, _ = runs
    out = new_run(runs, "frozen")
    ranks = start_ranks(train_args(tiny_corpus, cache, out, "train.max_steps=100000", "train.dist_timeout=0.3"))
    try:
        wait_for_step(out, 2, ranks)
        os.kill(ranks[1].pid, signal.SIGSTOP)
        code = ranks[0].wait(timeout=180)
        stderr = ranks[0].communicate()[1]
    finally:
        ranks[1].kill()
        ranks[1].wait()
    assert code == 2, stderr[-3000:]
    assert "lost contact with the other training processes" in stderr and "train.dist_timeout" in stderr


def test_torchrun_ends_the_run_when_a_rank_dies(tiny_corpus, runs):
    """Under torchrun (the documented launcher) a killed rank ends the whole run, non-zero, within seconds."""
    _, cache, _ = runs
    out = new_run(runs, "torchrun_killed")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               *train_args(tiny_corpus, cache, out, "train.max_steps=100000")]
    launcher = subprocess.Popen(command, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(out, 2, [launcher])
        rank_1 = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _is_rank_1_of(pid, out)]
        assert len(rank_1) == 1
        os.kill(rank_1[0], signal.SIGKILL)
        code = launcher.wait(timeout=120)
    finally:
        launcher.kill()
    assert code != 0
    assert "rank      : 1" in launcher.communicate()[1]  # torchrun's failure report names the root cause


def _is_rank_1_of(pid: int, out: Path) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"RANK=1" in environ and str(out).encode() in command and b"seq2seq.train" in command


def _agree_on_rank(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=3)
    dist = Distributed(rank=rank, world_size=3, local_world_size=3)
    # rank r: loss r + 1, clock 100 * (r + 1), rank 2 asks to stop, every rank would save
    agreed = dist.agree(float(rank + 1), 100.0 * (rank + 1), stop=rank == 2, save=True)
    quiet = dist.agree(1.0, 5.0 + rank, stop=False, save=rank == 1)  # only rank 0's clock decides a save
    import torch.distributed.distributed_c10d as c10d

    class NoPickle:  # what the ranks send each other must never be pickled (README: no pickle anywhere)
        def __init__(self, *args, **kwargs):
            raise AssertionError("pickled between ranks")

    c10d._pickler = c10d._unpickler = NoPickle
    shared = dist.from_main(lambda: {"bleu": 1.5 + rank, "pair": (rank, "ü")}, "test")
    gathered = dist.gather({"rank": rank * 10, "text": "x" * 100 * rank}, "test")  # lengths differ
    results.put((rank, agreed, quiet, shared, [g["rank"] for g in gathered] if rank != 1 else gathered))
    torch.distributed.destroy_process_group()


def test_ranks_agree_on_the_step_loss_rank_0s_clock_and_any_stop_request():
    context = torch.multiprocessing.get_context("spawn")
    results, port = context.Queue(), free_port()
    processes = [context.Process(target=_agree_on_rank, args=(rank, port, results)) for rank in range(3)]
    for process in processes:
        process.start()
    collected = sorted(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    for rank, agreed, quiet, shared, gathered in collected:
        assert agreed == StepAgreement(loss=6.0, elapsed=100.0, stop=True, save=True), rank
        assert quiet == StepAgreement(loss=3.0, elapsed=5.0, stop=False, save=False), rank
        assert shared == {"bleu": 1.5, "pair": [0, "ü"]}, rank  # rank 0's value, as JSON reads it, on every rank
        if rank == 1:
            assert gathered == [{"rank": r * 10, "text": "x" * 100 * r} for r in range(3)]
        else:
            assert gathered == [0, 10, 20]


def test_only_collective_failures_are_reported_as_lost_contact():
    """A failed collective (gloo's message, as a lost peer gives it; NCCL's DistBackendError) becomes the clear
    DistributedError; an error of the rank's own work inside the same block (autograd, a bug) goes on as it is."""
    from seq2seq.training.distributed import DistributedError

    ranks = Distributed(rank=1, world_size=2, local_world_size=2)
    gloo = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                        "[127.0.0.1]:17308")
    for failure in (gloo, torch.distributed.DistBackendError("NCCL error: remote process exited")):
        with pytest.raises(DistributedError, match="rank 1 of 2: lost contact .* while averaging gradients"):
            with ranks.reporting("averaging gradients"):
                raise failure
    own = RuntimeError("one of the variables needed for gradient computation has been modified by an inplace "
                       "operation")
    with pytest.raises(RuntimeError) as raised:
        with ranks.reporting("averaging gradients"):
            raise own
    assert raised.value is own


def test_one_process_agrees_with_itself():
    dist = Distributed()
    assert dist.agree(2.5, 7.0, stop=True, save=False) == StepAgreement(2.5, 7.0, True, False)
    assert dist.from_main(lambda: 3, "x") == 3 and dist.gather("a", "x") == ["a"]
    assert dist.from_main(lambda: (1, 2), "x") == [1, 2]  # as another rank would receive it
    with pytest.raises(TypeError):
        dist.gather(object(), "x")  # only JSON travels between ranks


def test_no_module_pickles():
    """README: no pickle anywhere. No module of the package imports pickle, calls torch.load, or uses
    torch.distributed's object collectives (which pickle)."""
    import re

    from conftest import REPO_ROOT

    banned = re.compile(r"\bimport pickle\b|\bfrom pickle\b|torch\.load\(|_object_list\(|_object\(|\bdill\b")
    offenders = [f"{path.relative_to(REPO_ROOT)}:{number}" for path in sorted((REPO_ROOT / "seq2seq").rglob("*.py"))
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                 if banned.search(line)]
    assert offenders == []


_EXIT_SCRIPT = """
import atexit, logging, sys
from seq2seq.training.distributed import exit_process
atexit.register(lambda: print("interpreter teardown ran", flush=True))
logging.basicConfig(stream=sys.stderr, level=logging.INFO)
logging.getLogger("x").info("logged before the end")
print("printed before the end", end="")  # unflushed: exit_process must flush it
exit_process(3)
"""


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_a_rank_ends_without_the_interpreters_teardown(world_size):
    """Under torchrun (WORLD_SIZE > 1) the process ends without interpreter teardown (where a leftover gloo worker
    thread can abort it), its output flushed and its exit code kept; one process ends normally."""
    env = {**SUBPROCESS_ENV, "WORLD_SIZE": world_size}
    ended = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert ended.returncode == 3, ended.stderr
    assert ended.stdout.startswith("printed before the end") and "logged before the end" in ended.stderr
    assert ("interpreter teardown ran" in ended.stdout) == (world_size == "1")
