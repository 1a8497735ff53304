"""What a Translator decodes with (seq2seq/backends.py): every wrong choice is one ValueError saying what to
use, and the right ones give the models asked for. The ensemble's tokenizer check: test_ensemble.py; threads:
test_cli_options.py; the onnx backend's outputs: test_onnx_export.py."""

from __future__ import annotations

import re

import pytest
import torch

from seq2seq.backends import load_decoding_models
from seq2seq.model import Seq2Seq


@pytest.mark.parametrize("kwargs,message", [
    ({"quantize": "int4"}, "quantize must be None or 'int8', got 'int4'"),
    ({"backend": "tensorrt"}, "backend must be 'torch' or 'onnx', got 'tensorrt'"),
    ({"backend": "onnx", "quantize": "int8"}, "backend='onnx' (--backend onnx) and quantize='int8' (--quantize int8) "
                                              "do not combine"),
    ({"backend": "onnx", "dtype": "bf16"}, "backend='onnx' (--backend onnx) runs fp32 on the CPU: dtype='bf16'"),
    ({"backend": "onnx", "dtype": "auto"}, "backend='onnx' (--backend onnx) runs fp32 on the CPU: dtype='auto'"),
    ({"quantize": "int8", "dtype": "bf16"}, "quantize='int8' (--quantize int8) runs fp32 on the CPU: dtype='bf16'"),
    ({"quantize": "int8", "device": "cuda"}, "use device='cpu' (--device cpu), not 'cuda'"),
    ({"backend": "onnx", "device": "cuda"}, "use device='cpu' (--device cpu), not 'cuda'"),
    ({"dtype": "fp8"}, "decode.dtype"),
])
def test_a_wrong_choice_is_one_clear_error(tiny_model_dir, kwargs, message):
    """One rule for flags that conflict: int8 and the onnx backend are fp32 on the CPU, so another dtype or device
    asked with them is refused (it used to run fp32 silently with --backend onnx --dtype bf16)."""
    with pytest.raises(ValueError, match=re.escape(message)):
        load_decoding_models(tiny_model_dir, **{"device": "cpu", **kwargs})


def test_no_model_directory_is_an_error():
    with pytest.raises(ValueError, match="no model directory given"):
        load_decoding_models([], device="cpu")


def test_one_directory_twice_is_an_ensemble_of_two_models_with_its_config(tiny_model_dir):
    cfg, models, src_tok, tgt_tok, device = load_decoding_models([tiny_model_dir, tiny_model_dir], device="cpu",
                                                                   dtype="fp32")
    assert device == torch.device("cpu") and cfg.decode.dtype == "fp32"
    assert len(models) == 2 and all(isinstance(m, Seq2Seq) for m in models) and models[0] is not models[1]
    assert src_tok.vocab_size == models[0].encoder.embedding.num_embeddings


def test_int8_quantizes_the_linear_layers_and_decodes_in_fp32(tiny_model_dir):
    cfg, models, *_ = load_decoding_models(tiny_model_dir, device="cpu", quantize="int8", dtype="fp32")
    assert cfg.decode.dtype == "fp32"  # int8 kernels replace the GEMMs; no autocast on top
    linear = {name: type(m) for name, m in models[0].named_modules() if type(m).__name__ == "Linear"}
    energy = {name for name in linear if name.endswith("energy_layer")}  # a 1-output vector read as a weight
    assert energy and all("quantized" not in linear[name].__module__ for name in energy), linear
    others = linear.keys() - energy
    assert others and all("quantized" in linear[name].__module__ for name in others), linear
