"""Numeric precision of inference: float32, bfloat16 / float16 matrix multiplies, or dynamic int8 linear layers.

``bf16`` / ``fp16`` store the Transformer's linear weights in the low precision and run the forward pass under
``torch.autocast``, so matrix multiplies and attention use the fast kernels while LayerNorms, the residual stream
and the contact head stay float32 (more accurate than casting the whole model, and as fast: the matmuls are the
time). ``int8`` quantises the linear layers dynamically (weights int8, activations per batch): the fast option on
CPUs without bfloat16 instructions, where bfloat16 is emulated and slower than float32.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

#: the --fp16 / --bf16 / --int8 choices; fp32 is the default
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: /proc/cpuinfo flags that multiply bfloat16 matrices in hardware (x86: AVX512-BF16, AMX; Arm: BF16)
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
#: flags a CPU speed figure should be read with
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
               "amx_int8", "asimd", "bf16", "i8mm", "sve")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bfloat16 matrices in hardware (else torch emulates it, slower than float32)."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run (ValueError with the reason)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("--fp16 needs a GPU: float16 matrix multiplies on the CPU are emulated and hundreds of "
                         "times slower; use --bf16 (or --int8 on CPUs without bfloat16 instructions)")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"--int8 (dynamic quantisation) runs on the CPU only, not on {device}; use --fp16 or --bf16")


def set_precision(model: nn.Module, precision: str) -> nn.Module:
    """Put an ESM model (eval mode, on its device) in ``precision`` for inference; returns the same model.

    ``bf16`` / ``fp16``: the Transformer layers' and LM head's linear weights are cast and ``model.compute_dtype``
    makes its forward pass run under autocast. ``int8``: those linear layers become dynamically quantised ones."""
    device = next(model.parameters()).device
    check_precision(precision, device)
    heavy = [model.layers] + ([model.lm_head] if getattr(model, "lm_head", None) is not None else [])
    if precision in _DTYPES:
        for part in heavy:
            for linear in part.modules():
                if isinstance(linear, nn.Linear):
                    linear.to(_DTYPES[precision])
        model.compute_dtype = _DTYPES[precision]
    elif precision == "int8":
        with warnings.catch_warnings():  # torch.ao's note on moving to torchao; its dynamic int8 is what we need
            warnings.simplefilter("ignore")
            for part in heavy:
                torch.ao.quantization.quantize_dynamic(part, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model
