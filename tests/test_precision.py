"""``dtype: auto`` by measurement: the decision rule, the timing of real work, the per-machine cache."""

from __future__ import annotations

import json

import pytest
import torch

from seq2seq import hardware, precision
from test_hardware import FAST_BF16, NO_AVX512
from seq2seq.config import ConfigError, ModelConfig
from seq2seq.decoding.search import decoding_work
from seq2seq.model import build_model
from seq2seq.training.step import training_work

CPU = torch.device("cpu")


def tiny_model():
    cfg = ModelConfig(emb_size=16, encoder_hidden_size=16, decoder_hidden_size=24, dropout=0.1)
    return build_model(cfg, src_vocab_size=50, tgt_vocab_size=60)


def test_decide_takes_the_fastest_unless_a_more_exact_dtype_is_within_the_margin():
    assert precision.decide({"fp32": 1.0, "bf16": 0.5}) == "bf16"
    assert precision.decide({"fp32": 0.5, "bf16": 1.0}) == "fp32"          # the Intel case: bf16 slower
    assert precision.decide({"fp32": 1.02, "bf16": 1.0}) == "fp32"         # 2% is inside the 3% margin
    assert precision.decide({"fp32": 1.04, "bf16": 1.0}) == "bf16"         # 4% is not
    assert precision.decide({"tf32": 1.0, "bf16": 0.6, "fp16": 0.59}) == "bf16"  # bf16 before fp16 on a near tie
    assert precision.decide({"tf32": 1.0, "bf16": 0.9, "fp16": 0.5}) == "fp16"


def test_explicit_dtypes_and_errors():
    assert precision.explicit_autocast("fp32", CPU) is None
    assert precision.explicit_autocast("tf32", CPU) is None  # TF32 is a CUDA matmul mode; plain fp32 here
    assert precision.explicit_autocast("bf16", CPU) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        precision.explicit_autocast("fp16", CPU)
    with pytest.raises(ConfigError, match="unknown compute dtype 'fp8'"):
        precision.explicit_autocast("fp8", CPU)


WORK = {"train": training_work(200), "decode": decoding_work(200, 2)}


@pytest.mark.parametrize("purpose", ["train", "decode"])
def test_measure_times_every_cpu_candidate_without_touching_the_model_or_the_rng(purpose):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    seconds = precision.measure(CPU, model, WORK[purpose], rounds=1)
    assert set(seconds) == {"fp32", "bf16"} and all(0 < s < 60 for s in seconds.values())
    assert torch.equal(torch.rand(3), expected_next), "measuring consumed the global random stream"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), f"measuring changed {name}"


def test_auto_measures_once_per_workload_and_then_reads_the_cache(tmp_path, monkeypatch, caplog):
    model = tiny_model()
    calls = []
    real_measure = precision.measure

    def counting_measure(*args, **kwargs):
        calls.append(args[2].purpose)
        return real_measure(*args, **kwargs, rounds=1)

    monkeypatch.setattr(precision, "measure", counting_measure)
    with caplog.at_level("INFO", logger="seq2seq.precision"):
        first = precision.choose_autocast("auto", CPU, model, training_work(200), tmp_path)
        again = precision.choose_autocast("auto", CPU, model, training_work(200), tmp_path)
        other = precision.choose_autocast("auto", CPU, model, decoding_work(8, 2), tmp_path)
    assert calls == ["train", "decode"], "the second train lookup should come from the cache"
    assert first == again and first in (None, torch.bfloat16) and other in (None, torch.bfloat16)
    cache = json.loads((tmp_path / precision.CACHE_FILE).read_text(encoding="utf-8"))
    assert sorted(key.split(" | ")[-1] for key in cache) == ["decode 8 beam 2", "train 200"]
    for key, entry in cache.items():
        assert torch.__version__ in key and "threads" in key
        assert set(entry["seconds"]) == {"fp32", "bf16"}
        assert entry["choice"] == precision.decide(entry["seconds"])
    assert "cached measurement" in caplog.text and "dtype auto for train" in caplog.text
    # a different model shape is a different workload
    bigger = build_model(ModelConfig(emb_size=16, encoder_hidden_size=16, decoder_hidden_size=32), 50, 60)
    precision.choose_autocast("auto", CPU, bigger, training_work(200), tmp_path)
    assert calls == ["train", "decode", "train"]


def test_an_unwritable_cache_still_gives_a_choice(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    assert precision.auto_dtype(CPU, tiny_model(), decoding_work(4, 1), blocker / "cache") in ("fp32", "bf16")


@pytest.fixture
def tf32_switches():
    """The process's TF32 switches as torch sets them by default (matmul off, cuDNN on), restored afterwards."""
    previous = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def test_fp32_on_cuda_turns_tf32_off_cudnn_included(tf32_switches):
    """fp32 means fp32: cuDNN's TF32 (on by default in torch) would run the fused RNN in TF32. The switches only
    affect CUDA kernels, so setting them is checked here without a GPU."""
    cuda = torch.device("cuda")
    assert precision.explicit_autocast("fp32", cuda) is None
    assert precision.numerics_flags() == {"matmul_tf32": False, "cudnn_tf32": False}
    assert precision.explicit_autocast("tf32", cuda) is None
    assert precision.numerics_flags() == {"matmul_tf32": True, "cudnn_tf32": True}
    precision.explicit_autocast("bf16", cuda)
    assert precision.numerics_flags() == {"matmul_tf32": False, "cudnn_tf32": False}


def test_numerics_apply_within_the_block_only(tf32_switches):
    with precision.numerics("tf32"):
        assert precision.numerics_flags() == {"matmul_tf32": True, "cudnn_tf32": True}
    assert precision.numerics_flags() == {"matmul_tf32": False, "cudnn_tf32": True}


def test_a_cache_shared_by_two_hosts_measures_on_each(tmp_path, monkeypatch):
    """A dtype-choices.json on a shared home directory: the host without AVX-512 does not take the choice the
    bf16 host measured; it measures for itself (and each host then reads its own entry)."""
    calls = []
    real_measure = precision.measure

    def counting_measure(*args, **kwargs):
        calls.append(hardware.machine_name(CPU))
        return real_measure(*args, **kwargs, rounds=1)

    monkeypatch.setattr(precision, "measure", counting_measure)
    model = tiny_model()
    for host in (FAST_BF16, NO_AVX512, FAST_BF16, NO_AVX512):
        (tmp_path / "cpuinfo").write_text(host, encoding="utf-8")
        monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "cpuinfo")
        precision.auto_dtype(CPU, model, training_work(200), tmp_path / "shared")
    assert len(calls) == 2 and calls[0] != calls[1]
    assert len(json.loads((tmp_path / "shared" / precision.CACHE_FILE).read_text(encoding="utf-8"))) == 2


def test_a_clearly_slower_candidate_is_timed_no_further():
    """A real slow candidate (bf16 doing ten training steps where fp32 does one, as a host emulating bf16 does in
    effect): after its warm-up, or at the latest its first timed run, it is timed no further, while fp32 runs every
    round; the choice is fp32. The runs are counted, not timed."""
    real_work, runs = training_work(200), {"fp32": 0, "bf16": 0}

    def prepare(model, device, amp):
        name, step = "bf16" if amp == torch.bfloat16 else "fp32", real_work.prepare(model, device, amp)
        repeats = 10 if name == "bf16" else 1

        def run():
            runs[name] += 1
            for _ in range(repeats):
                step()
        return run

    slow_bf16 = precision.TimedWork("train", "200", "step", prepare)
    seconds = precision.measure(CPU, tiny_model(), slow_bf16, rounds=3)
    assert runs["fp32"] == 4 and runs["bf16"] <= 2, runs
    assert precision.decide(seconds) == "fp32" and seconds["bf16"] > 2 * seconds["fp32"]


def test_candidates_within_twice_of_each_other_are_all_timed():
    assert not precision.clearly_slower(1.9, [1.0], precision.TIMED_SLOWER)
    assert precision.clearly_slower(2.1, [1.0, 5.0], precision.TIMED_SLOWER)
    assert not precision.clearly_slower(2.9, [1.0], precision.WARMUP_SLOWER)
    assert not precision.clearly_slower(9.0, [float("inf")], precision.TIMED_SLOWER)  # nothing timed yet to beat
