"""esm_masked_lm: CE at the targets only, logged in bits so that ppl is the ECE."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import CRITERION_REGISTRY

from fairseq_esm.criterions.esm_masked_lm import EsmMaskedLMCriterion
from fairseq_esm.modules.alphabet import esm1b_alphabet


class TinyLM(torch.nn.Module):
    """Embedding + linear head following the ESM model's forward contract."""

    def __init__(self, vocab: int, dim: int = 16) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, src_tokens, repr_layers=(), need_head_weights=False, return_contacts=False, masked_tokens=None):
        x = self.embed(src_tokens)
        if masked_tokens is not None:
            x = x[masked_tokens]
        return {"logits": self.head(x)}


@pytest.fixture
def setup():
    torch.manual_seed(0)
    alphabet = esm1b_alphabet()
    criterion = EsmMaskedLMCriterion(SimpleNamespace(source_dictionary=alphabet))
    return alphabet, criterion, TinyLM(len(alphabet))


def make_sample(alphabet, bsz: int = 4, length: int = 30, n_targets: int = 12) -> dict:
    src = torch.randint(4, 24, (bsz, length))
    src[:, 0] = alphabet.cls_idx
    src[-1, length // 2 :] = alphabet.padding_idx
    target = torch.full_like(src, alphabet.padding_idx)
    rows, cols = torch.randint(0, bsz - 1, (n_targets,)), torch.randint(1, length - 1, (n_targets,))
    target[rows, cols] = src[rows, cols]
    src[rows, cols] = alphabet.mask_idx
    return {"id": torch.arange(bsz), "nsentences": bsz, "ntokens": int(src.ne(alphabet.padding_idx).sum()),
            "net_input": {"src_tokens": src}, "target": target}


def test_registered():
    assert CRITERION_REGISTRY["esm_masked_lm"] is EsmMaskedLMCriterion


def test_loss_matches_direct_cross_entropy(setup):
    alphabet, criterion, model = setup
    sample = make_sample(alphabet)
    loss, sample_size, log = criterion(model, sample)
    chosen = sample["target"].ne(alphabet.padding_idx)
    full_logits = model(sample["net_input"]["src_tokens"])["logits"]
    expected = F.cross_entropy(full_logits[chosen], sample["target"][chosen], reduction="sum")
    assert torch.allclose(loss, expected, atol=1e-5)
    assert sample_size == log["sample_size"] == int(chosen.sum())
    assert log["n_correct"] == int(full_logits[chosen].argmax(-1).eq(sample["target"][chosen]).sum())
    assert (log["ntokens"], log["nsentences"]) == (sample["ntokens"], sample["nsentences"])
    loss.backward()
    assert model.head.weight.grad.abs().sum() > 0


def test_reduced_metrics_are_bits_and_ppl_is_ece(setup):
    alphabet, criterion, model = setup
    logs = [criterion(model, make_sample(alphabet, n_targets=n))[2] for n in (5, 17)]
    with metrics.aggregate() as agg:
        EsmMaskedLMCriterion.reduce_metrics(logs)
        stats = agg.get_smoothed_values()
    nats = sum(float(l["loss"]) for l in logs) / sum(l["sample_size"] for l in logs)
    assert stats["loss"] == pytest.approx(nats / math.log(2), abs=1e-3)
    assert stats["ppl"] == pytest.approx(math.exp(nats), abs=0.01)
    accuracy = 100 * sum(l["n_correct"] for l in logs) / sum(l["sample_size"] for l in logs)
    assert stats["accuracy"] == pytest.approx(accuracy, abs=1e-3)
    assert EsmMaskedLMCriterion.logging_outputs_can_be_summed()


def test_batch_without_targets_is_finite(setup):
    alphabet, criterion, model = setup
    sample = make_sample(alphabet, n_targets=0)
    loss, sample_size, log = criterion(model, sample)
    assert sample_size == 0 and float(loss.detach()) == 0.0 and log["n_correct"] == 0
    loss.backward()
    with metrics.aggregate() as agg:
        EsmMaskedLMCriterion.reduce_metrics([log])
        assert all(math.isfinite(v) for v in agg.get_smoothed_values().values())
