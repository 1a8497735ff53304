"""Compute dtypes by name: their autocast dtypes, the errors, and the CUDA numerics switches each one sets
(``dtype: auto`` is tests/test_dtype_auto.py)."""

from __future__ import annotations

import pytest
import torch

from seq2seq import precision
from seq2seq.config import ConfigError

CPU = torch.device("cpu")


def test_explicit_dtypes_and_errors():
    assert precision.explicit_autocast("fp32", CPU) is None
    assert precision.explicit_autocast("tf32", CPU) is None  # TF32 is a CUDA matmul mode; plain fp32 here
    assert precision.explicit_autocast("bf16", CPU) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        precision.explicit_autocast("fp16", CPU)
    with pytest.raises(ConfigError, match="unknown compute dtype 'fp8'"):
        precision.explicit_autocast("fp8", CPU)


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
