"""What every criterion of the plugin shares: counts summed over workers, the loss logged in bits.

A criterion sums its loss in nats over ``sample_size`` scored units (masked tokens, residues, pairs) and puts
counts in its logging output; :meth:`BitsCriterion.reduce_metrics` logs ``loss`` in bits per unit, so fairseq's
``ppl`` is the paper's ECE, and each ratio the subclass declares. A loss that is not a cross-entropy (the squared
error of ``mutational_effect``) sets ``loss_scale = 1`` and is logged as it is, per unit.
"""

import math
from typing import Any, NamedTuple

import torch
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion


class Ratio(NamedTuple):
    """A metric logged as ``scale * sum(numerator) / sum(denominator)``, weighted by the denominator."""

    name: str
    numerator: str
    denominator: str
    scale: float
    round: int


BITS = 1 / math.log(2)


class BitsCriterion(FairseqCriterion):
    """Base class: ``loss`` per ``sample_size`` unit (in bits unless ``loss_scale`` says otherwise), plus the
    subclass's ``ratios`` and derived ppls."""

    #: factor from the summed loss to the logged one: nats -> bits
    loss_scale = BITS
    #: decimals of the logged loss
    loss_round = 3
    #: further metrics computed from summed counts
    ratios: tuple[Ratio, ...] = ()
    #: perplexities derived from bit metrics, name -> metric (``ppl`` from ``loss``)
    perplexities: dict[str, str] = {}

    @staticmethod
    def logging_output(sample: dict[str, Any], loss: torch.Tensor, sample_size: int, **counts: Any) -> dict:
        """The fields every criterion logs (loss in nats, token/sentence/sample counts) plus its own counts."""
        return {"loss": loss.detach().sum(), "ntokens": sample["ntokens"], "nsentences": sample["nsentences"],
                "sample_size": sample_size, **counts}

    @classmethod
    def reduce_metrics(cls, logging_outputs: list[dict[str, Any]]) -> None:
        """Sum the counts of all workers and log ``loss`` (per unit, times ``loss_scale``), the ratios and the
        perplexities."""

        def total(key: str) -> float:
            return sum(float(log.get(key, 0.0)) for log in logging_outputs)

        size = total("sample_size")
        if size:
            metrics.log_scalar("loss", total("loss") / size * cls.loss_scale, size, round=cls.loss_round)
        for ratio in cls.ratios:
            denominator = total(ratio.denominator)
            if denominator:
                value = ratio.scale * total(ratio.numerator) / denominator
                metrics.log_scalar(ratio.name, value, denominator, round=ratio.round)
        for name, source in cls.perplexities.items():
            if total("sample_size" if source == "loss" else _denominator(cls.ratios, source)):
                metrics.log_derived(name, lambda meters, source=source: utils.get_perplexity(meters[source].avg))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def _denominator(ratios: tuple[Ratio, ...], name: str) -> str:
    """The denominator key of the ratio called ``name``."""
    return next(r.denominator for r in ratios if r.name == name)
