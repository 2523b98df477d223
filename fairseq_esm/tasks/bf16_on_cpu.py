"""``fairseq-train --bf16 [--cpu]``: bfloat16 training on the CPU (or GPU) through fairseq's own ``--bf16`` path.

fairseq's argument parsing reads ``--bf16`` as "implies --tpu" and its trainer then asks torch_xla for a TPU, so
the flag fails without one although everything else of fairseq's bf16 path (model in bfloat16, float32 master
weights in its ``FP16Optimizer``, no loss scaling) runs on CPUs and GPUs. The plugin wraps
``distributed_utils.call_main``, which every fairseq console script calls once with the whole config: with
``--cpu``, or where torch_xla is not installed (no TPU can be used), the implied TPU is dropped, and fairseq
picks the GPU if there is one, else the CPU. With torch_xla installed and no ``--cpu``, ``--tpu`` is left as it is.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

from fairseq.distributed import utils as distributed_utils

logger = logging.getLogger(__name__)


def drop_implied_tpu(cfg) -> None:
    """``--bf16`` with ``--cpu`` or without torch_xla: not the TPU fairseq's parser infers from ``--bf16``."""
    common = cfg.common
    if common.bf16 and common.tpu and (common.cpu or importlib.util.find_spec("torch_xla") is None):
        common.tpu = False
        if getattr(cfg.distributed_training, "tpu", False):
            cfg.distributed_training.tpu = False
        where = "the CPU" if common.cpu else "the GPU if there is one, else the CPU"
        logger.info(f"--bf16: training in bfloat16 on {where} (fairseq's --bf16 implies a TPU; there is none here)")


def bf16_runs_on_cpu(call_main):
    """fairseq's ``call_main``, with :func:`drop_implied_tpu` applied first."""
    if getattr(call_main, "fairseq_esm_bf16", False):
        return call_main

    @functools.wraps(call_main)
    def wrapped(cfg, main, **kwargs):
        drop_implied_tpu(cfg)
        return call_main(cfg, main, **kwargs)

    wrapped.fairseq_esm_bf16 = True
    return wrapped


def install_bf16_on_cpu() -> None:
    """Make ``--bf16`` train without a TPU in every fairseq console script; idempotent."""
    distributed_utils.call_main = bf16_runs_on_cpu(distributed_utils.call_main)
