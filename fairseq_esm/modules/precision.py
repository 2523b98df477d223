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
from typing import Any

import torch
from torch import nn

#: the --fp16 / --bf16 / --int8 choices; fp32 is the default
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: rows per linear call the packed weights are laid out for (a typical token budget's worth)
TOKENS_HINT = 2048
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


class PackedLinear(nn.Module):
    """An inference-only ``nn.Linear`` on the CPU whose weight is packed once into oneDNN's blocked layout.

    torch sends float32 ``F.linear`` to MKL, which on AMD CPUs takes a path at about half the AVX-512 peak that
    oneDNN reaches (``benchmarks/cpu_limit.py`` measures both); oneDNN also skips repacking the weight on every
    bfloat16 call. The result equals ``F.linear``'s to float32 rounding (sums in another order)."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype, tokens_hint: int = TOKENS_HINT,
                 gelu: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features, self.dtype = linear.in_features, linear.out_features, dtype
        #: the exact (erf) GELU is applied inside oneDNN's kernel, on the output still in cache
        self.tokens_hint, self.applies_gelu = tokens_hint, gelu
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().to(dtype), tokens_hint)
        self.register_buffer("packed", packed, persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().to(dtype)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out) in the packed dtype."""
        if self.applies_gelu:
            return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.packed, self.bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.packed, self.bias, "none", [], "")

    def unpacked(self) -> nn.Linear:
        """The plain ``nn.Linear`` (in the packed dtype) this layer computes."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, dtype=self.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.packed.to_dense())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        # the state dict keeps nn.Linear's keys and layout, so a prepared model saves like the original
        destination[prefix + "weight"] = self.packed.to_dense()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        weight = state_dict.get(prefix + "weight")
        if weight is not None:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(self.dtype), self.tokens_hint)
        if self.bias is not None and prefix + "bias" in state_dict:
            self.bias = state_dict[prefix + "bias"].detach().to(self.dtype)

    def __deepcopy__(self, memo: dict) -> "PackedLinear":
        # oneDNN's packed tensor has no storage to copy: pack the weight again
        return PackedLinear(self.unpacked(), self.dtype, self.tokens_hint, self.applies_gelu)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.dtype}"
                + (", gelu" if self.applies_gelu else ""))


def can_pack(device: torch.device) -> bool:
    """Whether :class:`PackedLinear` runs here: a CPU, and a torch built with oneDNN."""
    return (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def _replace_linears(part: nn.Module, make) -> None:
    """Swap every ``nn.Linear`` inside ``part`` for ``make(linear, name)``."""
    for name, child in part.named_children():
        if isinstance(child, nn.Linear):
            setattr(part, name, make(child, name))
        else:
            _replace_linears(child, make)


def set_precision(model: nn.Module, precision: str, tokens_hint: int = TOKENS_HINT) -> nn.Module:
    """Prepare a freshly loaded ESM model (on its device) for inference in ``precision``; returns it in eval mode.

    The Transformer layers' and LM head's linear layers change: on a CPU they become :class:`PackedLinear`
    (float32 or bfloat16; ``tokens_hint`` is the usual rows per call), ``int8`` makes them dynamically quantised
    (weights per output channel), and elsewhere ``bf16`` / ``fp16`` cast their weights. With ``bf16`` / ``fp16``
    ``model.compute_dtype`` runs the forward pass under autocast. Not for training: weights changed later are not
    seen by packed layers."""
    device = next(model.parameters()).device
    check_precision(precision, device)
    if getattr(model, "inference_precision", None) is not None:
        raise ValueError("set_precision: this model was already prepared; load it again for another precision")
    model.eval()
    heavy = [model.layers] + ([model.lm_head] if getattr(model, "lm_head", None) is not None else [])
    dtype = _DTYPES.get(precision, torch.float32)
    if precision == "int8":
        qconfig = {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        with warnings.catch_warnings():  # torch.ao's note on moving to torchao; its dynamic int8 is what we need
            warnings.simplefilter("ignore")
            for part in heavy:
                torch.ao.quantization.quantize_dynamic(part, qconfig, dtype=torch.qint8, inplace=True)
    elif can_pack(device):
        for part in heavy:
            # a Transformer layer's fc1 is always followed by the exact GELU: fold it into the kernel
            _replace_linears(part, lambda linear, name: PackedLinear(linear, dtype, tokens_hint, gelu=name == "fc1"))
    elif dtype != torch.float32:
        for part in heavy:
            for linear in part.modules():
                if isinstance(linear, nn.Linear):
                    linear.to(dtype)
    if dtype != torch.float32:
        model.compute_dtype = dtype
    model.inference_precision = precision
    return model
