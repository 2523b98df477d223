"""Streamed contacts (``predict_contacts``): each layer's attention maps are folded into running logits and
dropped, so no (B, layers, heads, T, T) tensor is built; the result equals the stacked path and fair-esm's."""

from __future__ import annotations

import esm
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from fairseq_esm.checkpoints import load_model
from fairseq_esm.inference.contacts import attention_features
from fairseq_esm.modules.batching import pad_tokens
from fairseq_esm.modules.contact_head import ContactStream

LAYERS, HEADS = 3, 4  # the official_checkpoint fixture's default sizes
TOLERANCE = 1e-5


def real_batch(sample_proteins: list[str], alphabet) -> tuple[list[str], torch.Tensor]:
    """Four real proteins of different lengths (so the batch pads), one of them with an X; padded tokens."""
    with_x = next(p for p in sample_proteins if "X" in p and len(p) <= 100)
    others = {len(p): p for p in sample_proteins if 30 <= len(p) <= 120 and "X" not in p}
    proteins = [with_x] + [others[n] for n in sorted(others)[::9][:3]]
    assert len({len(p) for p in proteins}) == 4
    return proteins, pad_tokens([alphabet.tokenize(p) for p in proteins], alphabet.padding_idx)


def spread_regression(models, alphabet, protein: str) -> None:
    """The same regression on every model, scaled so probabilities spread over (0, 1) and a 1e-5 agreement
    means something (the fixture's random one keeps them near 0.5)."""
    features = attention_features(models[0], alphabet, protein)
    coef = torch.randn(features.shape[-1], generator=torch.Generator().manual_seed(0)) / features.std()
    with torch.no_grad():
        for model in models:
            model.contact_head.regression.weight.copy_(coef[None])
            model.contact_head.regression.bias.fill_(-1.0)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype
    return (a - b).abs().max().item()


@pytest.mark.parametrize("variant", ["esm1b", "esm1"])
@torch.no_grad()
def test_streamed_contacts_equal_stacked_path_and_fair_esm(variant, official_checkpoint, sample_proteins) -> None:
    checkpoint = official_checkpoint(variant)
    ours, alphabet = load_model(checkpoint)
    theirs, _ = esm.pretrained.load_model_and_alphabet_local(str(checkpoint))
    proteins, tokens = real_batch(sample_proteins, alphabet)
    spread_regression([ours, theirs.eval()], alphabet, proteins[0])
    streamed = ours.predict_contacts(tokens)
    stacked = ours(tokens, return_contacts=True)
    assert max_diff(streamed, stacked["contacts"]) <= TOLERANCE
    assert max_diff(streamed, theirs.predict_contacts(tokens)) <= TOLERANCE
    residues = tokens.size(1) - alphabet.num_specials_added
    assert streamed.shape == (4, residues, residues)
    for row, protein in enumerate(proteins):  # padding changes nothing
        alone = ours.predict_contacts(alphabet.tokenize(protein)[None])[0]
        assert alone.shape == (len(protein),) * 2 and alone.std() > 0.05
        assert max_diff(streamed[row, : len(protein), : len(protein)], alone) <= TOLERANCE
    lean = ours(tokens, repr_layers=[0, LAYERS], need_head_weights=False, return_contacts=True)
    assert "attentions" not in lean and stacked["attentions"].shape[1:3] == (LAYERS, HEADS)  # fair-esm's contract
    assert torch.equal(lean["contacts"], streamed) and max_diff(lean["logits"], stacked["logits"]) <= TOLERANCE


@pytest.mark.parametrize("variant", ["esm1b", "esm1"])
@torch.no_grad()
def test_streamed_sum_is_the_regression_in_float64_and_keeps_dtype(variant, official_checkpoint,
                                                                   sample_proteins) -> None:
    """In float64 rounding vanishes: any slip in masks, trimming or the layer-major weight order would show."""
    ours, alphabet = load_model(official_checkpoint(variant))
    proteins, tokens = real_batch(sample_proteins, alphabet)
    spread_regression([ours], alphabet, proteins[0])
    ours.double()
    assert max_diff(ours.predict_contacts(tokens), ours(tokens, return_contacts=True)["contacts"]) <= 1e-12
    weight = ours.contact_head.regression.weight
    head_major = weight.detach().view(LAYERS, HEADS).t().reshape(1, -1).clone()
    stacked = ours(tokens, return_contacts=True)["contacts"]
    weight.copy_(head_major)
    assert max_diff(ours.predict_contacts(tokens), stacked) > 0.01  # the order matters, and is layer-major
    ours.to(torch.bfloat16)
    lean, stacked = ours.predict_contacts(tokens), ours(tokens, return_contacts=True)["contacts"]
    assert lean.dtype == stacked.dtype == torch.bfloat16
    exact = ours.double().predict_contacts(tokens)  # the same bfloat16-rounded weights, in float64
    assert max_diff(lean.double(), exact) <= max_diff(stacked.double(), exact) + 0.02  # no worse than stacking


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest storage any operator allocates (outputs sharing an input's
    storage, i.e. views, are not allocations)."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for value in tree_leaves(out):
            if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() not in inputs:
                self.numel = max(self.numel, value.untyped_storage().nbytes() // value.element_size())
        return out


@pytest.mark.parametrize("variant", ["esm1b", "esm1"])
@torch.no_grad()
def test_no_tensor_holds_every_layers_maps(variant, official_checkpoint, sample_proteins, monkeypatch) -> None:
    """Deterministic memory check: streamed, the largest tensor ever made is one layer's (B, H, T, S) maps
    (made by the attention itself), and the contact head makes nothing bigger than (B, T, S); stacked, one
    tensor holds all layers' maps."""
    ours, alphabet = load_model(official_checkpoint(variant))
    _, tokens = real_batch(sample_proteins, alphabet)
    batch, length = tokens.shape
    columns = length + int(variant == "esm1")  # ESM-1: one bias key column
    in_head = LargestTensor()
    add = ContactStream.add

    def watched_add(stream, attention):
        with in_head:
            add(stream, attention)

    monkeypatch.setattr(ContactStream, "add", watched_add)
    with LargestTensor() as streamed:
        ours.predict_contacts(tokens)
    with LargestTensor() as stacked:
        ours(tokens, return_contacts=True)
    assert streamed.numel == batch * HEADS * length * columns
    assert in_head.numel == batch * length * columns
    assert stacked.numel >= LAYERS * batch * HEADS * length * columns


def test_stream_refuses_missing_or_extra_layers(official_checkpoint, sample_proteins) -> None:
    ours, alphabet = load_model(official_checkpoint("esm1b"))
    _, tokens = real_batch(sample_proteins, alphabet)
    stream = ours.contact_head.stream(tokens, tokens.eq(alphabet.padding_idx))
    maps = torch.rand(tokens.size(0), HEADS, tokens.size(1), tokens.size(1))
    for _ in range(LAYERS - 1):
        stream.add(maps)
    with pytest.raises(ValueError, match="8 attention maps added, the regression weighs 12"):
        stream.probabilities()
    stream.add(maps)
    assert stream.probabilities().shape == (tokens.size(0), tokens.size(1) - 2, tokens.size(1) - 2)
    with pytest.raises(ValueError, match="no room for 4 more heads"):
        stream.add(maps)
