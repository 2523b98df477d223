"""``fairseq-train --bf16 --cpu``: bfloat16 training on the CPU through fairseq's own ``--bf16`` path.

fairseq's argument parsing reads ``--bf16`` as "implies --tpu" and its trainer then asks torch_xla for a TPU, so
the flag fails on a CPU although everything else of fairseq's bf16 path (model in bfloat16, float32 master
weights in its ``FP16Optimizer``, no loss scaling) runs there. The plugin wraps ``distributed_utils.call_main``,
which every fairseq console script calls once with the whole config: with ``--cpu`` the implied TPU is dropped.
An explicit ``--tpu`` without ``--cpu`` is left as it is.
"""

from __future__ import annotations

import functools
import logging

from fairseq.distributed import utils as distributed_utils

logger = logging.getLogger(__name__)


def drop_implied_tpu(cfg) -> None:
    """``--bf16 --cpu``: the CPU, not the TPU fairseq's parser infers from ``--bf16``."""
    common = cfg.common
    if common.cpu and common.bf16 and common.tpu:
        common.tpu = False
        if getattr(cfg.distributed_training, "tpu", False):
            cfg.distributed_training.tpu = False
        logger.info("--bf16 --cpu: training in bfloat16 on the CPU (fairseq's --bf16 implies a TPU; --cpu wins)")


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
    """Make ``--bf16 --cpu`` train on the CPU in every fairseq console script; idempotent."""
    distributed_utils.call_main = bf16_runs_on_cpu(distributed_utils.call_main)
