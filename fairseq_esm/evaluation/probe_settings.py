"""The linear probes' settings a parser offers before torch, sklearn or scipy load: held-out levels, contact probe."""

from __future__ import annotations

from dataclasses import dataclass

#: SCOPe levels a partition can hold out, finest first
LEVELS = ("family", "superfamily", "fold")


@dataclass(frozen=True)
class ContactProbeConfig:
    """The bilinear probe's fixed settings: the paper's dim 128 and weight decay 0.2; lr and epochs ours."""

    dim: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.2
    epochs: int = 10
    seed: int = 1
