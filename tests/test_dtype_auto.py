"""``dtype: auto`` by measurement: the decision rule, the timing of real work, its time budget and its probe, the
log lines, the per-machine cache."""

from __future__ import annotations

import json
import time

import pytest
import torch

from seq2seq import dtype_auto, hardware
from test_hardware import FAST_BF16, NO_AVX512
from seq2seq.config import ModelConfig
from seq2seq.decoding.search import decoding_work
from seq2seq.model import build_model
from seq2seq.training.step import training_work

CPU = torch.device("cpu")


def tiny_model():
    cfg = ModelConfig(emb_size=16, encoder_hidden_size=16, decoder_hidden_size=24, dropout=0.1)
    return build_model(cfg, src_vocab_size=50, tgt_vocab_size=60)


def test_decide_takes_the_fastest_unless_a_more_exact_dtype_is_within_the_margin():
    assert dtype_auto.decide({"fp32": 1.0, "bf16": 0.5}) == "bf16"
    assert dtype_auto.decide({"fp32": 0.5, "bf16": 1.0}) == "fp32"          # the Intel case: bf16 slower
    assert dtype_auto.decide({"fp32": 1.02, "bf16": 1.0}) == "fp32"         # 2% is inside the 3% margin
    assert dtype_auto.decide({"fp32": 1.04, "bf16": 1.0}) == "bf16"         # 4% is not
    assert dtype_auto.decide({"tf32": 1.0, "bf16": 0.6, "fp16": 0.59}) == "bf16"  # bf16 before fp16 on a near tie
    assert dtype_auto.decide({"tf32": 1.0, "bf16": 0.9, "fp16": 0.5}) == "fp16"


WORK = {"train": training_work(200), "decode": decoding_work(200, 2)}  # 5 rows (no probe); 200 rows (a probe)


@pytest.mark.parametrize("purpose", ["train", "decode"])
def test_measure_times_every_cpu_candidate_without_touching_the_model_or_the_rng(purpose):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    measured = dtype_auto.measure(CPU, model, WORK[purpose], rounds=1)
    seconds = measured.probe if measured.probe_rows else measured.whole  # the probe runs every candidate
    assert set(seconds) == {"fp32", "bf16"} and all(0 < s < 60 for s in seconds.values())
    assert measured.probe_rows == (dtype_auto.PROBE_ROWS if purpose == "decode" else 0)
    assert torch.equal(torch.rand(3), expected_next), "measuring consumed the global random stream"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), f"measuring changed {name}"


def counted(monkeypatch, calls: list, record=lambda args: args[2].purpose):
    """dtype_auto.measure, one round, each call recorded in ``calls``."""
    real_measure = dtype_auto.measure

    def counting_measure(*args, **kwargs):
        calls.append(record(args))
        return real_measure(*args, **kwargs, rounds=1)

    monkeypatch.setattr(dtype_auto, "measure", counting_measure)


def test_auto_measures_once_per_workload_and_then_reads_the_cache(tmp_path, monkeypatch, caplog):
    model = tiny_model()
    calls = []
    counted(monkeypatch, calls)
    with caplog.at_level("INFO", logger="seq2seq.dtype_auto"):
        first = dtype_auto.choose_autocast("auto", CPU, model, training_work(200), tmp_path)
        again = dtype_auto.choose_autocast("auto", CPU, model, training_work(200), tmp_path)
        other = dtype_auto.choose_autocast("auto", CPU, model, decoding_work(8, 2), tmp_path)
    assert calls == ["train", "decode"], "the second train lookup should come from the cache"
    assert first == again and first in (None, torch.bfloat16) and other in (None, torch.bfloat16)
    cache = json.loads((tmp_path / dtype_auto.CACHE_FILE).read_text(encoding="utf-8"))
    assert sorted(key.split(" | ")[-1] for key in cache) == ["decode 8 beam 2", "train 200"]
    for key, entry in cache.items():
        assert torch.__version__ in key and "threads" in key
        assert set(entry["seconds"]) == {"fp32", "bf16"}
        assert entry["choice"] == dtype_auto.decide(entry["seconds"]) and not entry["fallback"]
    assert "cached measurement" in caplog.text and "dtype auto for train" in caplog.text
    # a different model shape is a different workload
    bigger = build_model(ModelConfig(emb_size=16, encoder_hidden_size=16, decoder_hidden_size=32), 50, 60)
    dtype_auto.choose_autocast("auto", CPU, bigger, training_work(200), tmp_path)
    assert calls == ["train", "decode", "train"]


def test_an_unwritable_cache_still_gives_a_choice(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    assert dtype_auto.auto_dtype(CPU, tiny_model(), decoding_work(4, 1), blocker / "cache") in ("fp32", "bf16")


def test_a_cache_shared_by_two_hosts_measures_on_each(tmp_path, monkeypatch):
    """A dtype-choices.json on a shared home directory: the host without AVX-512 does not take the choice the
    bf16 host measured; it measures for itself (and each host then reads its own entry)."""
    calls = []
    counted(monkeypatch, calls, record=lambda args: hardware.machine_name(CPU))
    model = tiny_model()
    for host in (FAST_BF16, NO_AVX512, FAST_BF16, NO_AVX512):
        (tmp_path / "cpuinfo").write_text(host, encoding="utf-8")
        monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "cpuinfo")
        dtype_auto.auto_dtype(CPU, model, training_work(200), tmp_path / "shared")
    assert len(calls) == 2 and calls[0] != calls[1]
    assert len(json.loads((tmp_path / "shared" / dtype_auto.CACHE_FILE).read_text(encoding="utf-8"))) == 2


def test_a_clearly_slower_candidate_is_timed_no_further():
    """A real slow candidate (bf16 doing ten training steps where fp32 does one, as a host emulating bf16 does in
    effect): after its warm-up, or at the latest its first timed run, it is timed no further, while fp32 runs every
    round; the choice is fp32. The runs are counted, not timed (5 rows: no probe)."""
    real_work, runs = training_work(200), {"fp32": 0, "bf16": 0}

    def prepare(model, device, amp, rows):
        name, step = "bf16" if amp == torch.bfloat16 else "fp32", real_work.prepare(model, device, amp, rows)
        repeats = 10 if name == "bf16" else 1

        def run():
            runs[name] += 1
            for _ in range(repeats):
                step()
        return run

    slow_bf16 = dtype_auto.TimedWork("train", "200", "step", real_work.rows, prepare)
    measured = dtype_auto.measure(CPU, tiny_model(), slow_bf16, rounds=3)
    assert runs["fp32"] == 4 and runs["bf16"] <= 2, runs
    assert measured.choice() == "fp32" and measured.whole["bf16"] > 2 * measured.whole["fp32"]


def test_one_slowed_run_does_not_drop_the_fastest_candidate():
    """A host that stalls one timed run of the fastest candidate (another process took the cores) must not stop
    its timing: the rule compares each candidate's best run, so bf16 (40 ms, one run stalled to 400 ms) is timed
    every round and chosen over fp32 (60 ms). Sleeps, not work: the runs are counted."""
    runs = {"fp32": 0, "bf16": 0}

    def prepare(model, device, amp, rows):
        name = "bf16" if amp == torch.bfloat16 else "fp32"

        def run():
            runs[name] += 1
            time.sleep(0.06 if name == "fp32" else (0.4 if runs[name] == 3 else 0.04))  # run 3: a stalled one
        return run

    stalled = dtype_auto.TimedWork("train", "sleeps", "step", 8, prepare)  # 8 rows: no probe
    measured = dtype_auto.measure(CPU, tiny_model(), stalled, rounds=3)
    assert runs["bf16"] == 4, runs  # warm-up and three timed rounds
    assert measured.choice() == "bf16"


def test_candidates_within_twice_of_each_other_are_all_timed():
    assert not dtype_auto.clearly_slower(1.9, [1.0], dtype_auto.TIMED_SLOWER)
    assert dtype_auto.clearly_slower(2.1, [1.0, 5.0], dtype_auto.TIMED_SLOWER)
    assert not dtype_auto.clearly_slower(2.9, [1.0], dtype_auto.WARMUP_SLOWER)
    assert not dtype_auto.clearly_slower(9.0, [float("inf")], dtype_auto.TIMED_SLOWER)  # nothing timed yet to beat


def slow_work(seconds_per_row: dict[str, float], rows: int, budget: float):
    """Work of ``rows`` sentences that takes ``seconds_per_row`` per sentence in each dtype (sleeps: a host where
    bf16 is that much slower, free of the load other processes put on this one); the rows each run had, in
    ``rows_run``."""
    rows_run = []

    def prepare(model, device, amp, rows):
        name = "bf16" if amp == torch.bfloat16 else "fp32"
        return lambda: (rows_run.append((name, rows)), time.sleep(seconds_per_row[name] * rows))

    work = dtype_auto.TimedWork("train", "slow", "step", rows, prepare, what="a slow step",
                                skip="set train.dtype (--set train.dtype=fp32, or bf16)", budget=budget)
    return work, rows_run


def test_a_candidate_slow_on_its_probe_never_runs_the_whole_step(tmp_path, caplog):
    """bf16 at 50 ms a sentence (fp32: 1 ms): its whole step of 100 sentences would take 5 s. The probe (4
    sentences) shows it clearly slower, so it is dropped there, well within the 2 s budget, and fp32, the one left,
    is chosen without a whole step of either."""
    work, rows_run = slow_work({"fp32": 0.001, "bf16": 0.05}, rows=100, budget=2.0)
    start = time.perf_counter()
    with caplog.at_level("INFO", logger="seq2seq.dtype_auto"):
        assert dtype_auto.auto_dtype(CPU, tiny_model(), work, tmp_path) == "fp32"
    assert time.perf_counter() - start < 2.0
    assert all(rows == dtype_auto.PROBE_ROWS for _, rows in rows_run), rows_run
    assert ("bf16", 4) in rows_run and "stopped timing bf16" in caplog.text


def test_out_of_budget_falls_back_to_fp32_says_so_and_is_cached(tmp_path, caplog):
    """Both dtypes at 20 ms a sentence: a whole step of 100 sentences (2 s) cannot be timed within a 1 s budget,
    so no whole step starts; auto takes fp32, the most exact, with a warning naming the budget and how to choose;
    the line before measuring says what it times and how to skip it; the next run reads the choice from the
    cache without timing anything."""
    work, rows_run = slow_work({"fp32": 0.02, "bf16": 0.02}, rows=100, budget=1.0)
    start = time.perf_counter()
    with caplog.at_level("INFO", logger="seq2seq.dtype_auto"):
        assert dtype_auto.auto_dtype(CPU, tiny_model(), work, tmp_path) == "fp32"
    assert time.perf_counter() - start < 1.0 + 0.5
    assert rows_run and all(rows == dtype_auto.PROBE_ROWS for _, rows in rows_run), rows_run
    first = caplog.records[0].getMessage()
    assert "timing fp32 and bf16 on a slow step" in first and "at most about 1 s" in first
    assert "to skip it, set train.dtype (--set train.dtype=fp32, or bf16)" in first
    warning = next(r for r in caplog.records if r.levelname == "WARNING").getMessage()
    assert "longer than its 1 s budget" in warning and "using fp32, the most exact" in warning
    assert "--set train.dtype=fp32" in warning
    rows_run.clear()
    caplog.clear()
    with caplog.at_level("INFO", logger="seq2seq.dtype_auto"):
        assert dtype_auto.auto_dtype(CPU, tiny_model(), work, tmp_path) == "fp32"
    assert rows_run == [] and "cached measurement" in caplog.text and "ran out of time" in caplog.text


def test_the_budget_stops_the_rounds_before_a_run_that_would_end_past_it():
    """No probe (8 rows); every run sleeps 0.25 s and the budget is 0.9 s: the two warm-ups and fp32's first timed
    run fit (0.75 s); bf16's timed run, predicted from its last run, would end at 1 s, so it is not started. bf16
    then has no timed run to compare: the measurement has no choice (the caller takes fp32)."""
    runs = []

    def prepare(model, device, amp, rows):
        name = "bf16" if amp == torch.bfloat16 else "fp32"
        return lambda: (runs.append(name), time.sleep(0.25))

    work = dtype_auto.TimedWork("train", "sleeps", "step", 8, prepare, budget=0.9)
    measured = dtype_auto.measure(CPU, tiny_model(), work, rounds=3)
    assert runs == ["fp32", "bf16", "fp32"] and measured.out_of_time
    assert measured.spent <= 0.9 and measured.choice() is None and measured.timed == {"fp32"}


def test_a_first_probe_run_is_predicted_from_the_others():
    """fp32's probe (4 sentences at 0.15 s each) takes 0.6 s of a 1 s budget: bf16's first probe run, predicted to
    take as long, is not started, so the measurement stops at 0.6 s instead of running on to 1.2 s."""
    runs = []

    def prepare(model, device, amp, rows):
        name = "bf16" if amp == torch.bfloat16 else "fp32"
        return lambda: (runs.append((name, rows)), time.sleep(0.15 * rows))

    work = dtype_auto.TimedWork("train", "sleeps", "step", 100, prepare, budget=1.0)
    measured = dtype_auto.measure(CPU, tiny_model(), work)
    assert runs == [("fp32", dtype_auto.PROBE_ROWS)] and measured.out_of_time and measured.spent <= 1.0
