"""The attention fast paths agree with the slow ones on real proteins, and the fused kernel is what runs, for
ESM-1b and for ESM-2 (whose rotary positions are applied to queries and keys before the fused kernel).

SDPA without a mask (a batch with no padding), SDPA with our key-padding mask, and the written-out
softmax (taken when attention maps are requested) must give the same representations; bf16 autocast
(``benchmarks/train_speed.py --dtype bf16``) must stay near float32; and on CPU the padded batch must
run torch's flash kernel, not the math kernel with its (L, L) score matrix per head.
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel, Esm2Config, Esm2Model
from fairseq_esm.modules.alphabet import esm1b_alphabet
from fairseq_esm.modules.attention import SelfAttention

EXACT, BF16_LOGPROB = 1e-5, 0.02


@pytest.fixture(scope="module", params=["esm1b", "esm2"])
def model(request) -> Esm1bModel:
    """A random 3-layer ESM-1b or ESM-2 (rotary positions; d=64, 4 heads) in eval mode."""
    torch.manual_seed(0)
    kind, config = {"esm1b": (Esm1bModel, Esm1bConfig), "esm2": (Esm2Model, Esm2Config)}[request.param]
    ffn = 128 if request.param == "esm1b" else 256  # ESM-2: 4 x dim
    sizes = config(encoder_layers=3, encoder_embed_dim=64, encoder_ffn_embed_dim=ffn, encoder_attention_heads=4,
                   max_positions=256)
    return kind(sizes, esm1b_alphabet()).eval()


def tokens(proteins: list[str]) -> torch.Tensor:
    """Right-padded ``<cls> seq <eos>`` tokens."""
    alphabet = esm1b_alphabet()
    rows = [alphabet.tokenize(p) for p in proteins]
    out = torch.full((len(rows), max(len(r) for r in rows)), alphabet.padding_idx, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


@pytest.fixture(scope="module")
def proteins(sample_proteins) -> list[str]:
    """Four real proteins cut to different lengths (200 residues and fewer), so a batch of them pads."""
    return [p[: 200 - 37 * i] for i, p in enumerate(sample_proteins[:4])]


def last_layer(model: Esm1bModel, batch: torch.Tensor, **kwargs) -> torch.Tensor:
    """Final-layer representations (B, T, C)."""
    with torch.no_grad():
        return model(batch, repr_layers=[model.num_layers], **kwargs)["representations"][model.num_layers]


def test_batch_without_padding_matches_padded_batch(model, proteins):
    """Each protein alone (no mask: fused kernel) = the same protein inside a padded batch (masked)."""
    padded = tokens(proteins)
    assert padded.eq(model.padding_idx).any(), "the batch must pad for this test to compare two paths"
    together = last_layer(model, padded)
    for i, protein in enumerate(proteins):
        alone = last_layer(model, tokens([protein]))[0]
        assert (alone - together[i, : alone.size(0)]).abs().max().item() <= EXACT


def test_all_false_mask_equals_no_mask():
    """SelfAttention: a key-padding mask with no pads gives what no mask gives."""
    torch.manual_seed(1)
    attention = SelfAttention(64, 4).eval()
    x = torch.randn(3, 50, 64)
    with torch.no_grad():
        unmasked, _ = attention(x)
        masked, _ = attention(x, torch.zeros(3, 50, dtype=torch.bool))
    assert (unmasked - masked).abs().max().item() <= EXACT


def test_attention_maps_still_work_and_match_fused_path(model, proteins):
    """need_head_weights: maps of shape (B, L, H, T, T), rows summing to 1 over real tokens, zero at pads,
    and the same representations as the fused path."""
    batch = tokens(proteins)
    with torch.no_grad():
        out = model(batch, repr_layers=[model.num_layers], need_head_weights=True)
    maps = out["attentions"]
    assert maps.shape == (len(proteins), 3, 4, batch.size(1), batch.size(1))
    real = batch.ne(model.padding_idx)
    row_sums = maps.sum(-1)  # (B, L, H, T)
    assert torch.allclose(row_sums[real[:, None, None, :].expand_as(row_sums)], torch.tensor(1.0), atol=1e-5)
    assert row_sums[~real[:, None, None, :].expand_as(row_sums)].abs().max().item() == 0.0
    fused = last_layer(model, batch)
    assert (out["representations"][model.num_layers] - fused).abs().max().item() <= EXACT


def test_bf16_autocast_stays_near_float32(model, proteins):
    """CPU bf16 autocast (the benchmark's --dtype bf16): log-probabilities within 0.02 of float32's."""
    batch = tokens(proteins)
    seen = []
    hook = model.layers[0].fc1.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with torch.no_grad():
        reference = model(batch)["logits"].log_softmax(-1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(batch)["logits"]
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16], "autocast did not run the layers in bf16"
    real = batch.ne(model.padding_idx)
    difference = (logits.float().log_softmax(-1) - reference)[real].abs().max().item()
    assert 0.0 < difference <= BF16_LOGPROB


def test_padded_batch_runs_the_flash_kernel_not_math(model, proteins):
    """Our key-padding mask keeps CPU SDPA on the flash kernel (no (T, T) score matrix per head)."""
    batch = tokens(proteins)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as profiler:
        model(batch)
    names = [event.name for event in profiler.events()]
    assert names.count("aten::_scaled_dot_product_flash_attention_for_cpu") == model.num_layers
    assert not any("attention_math" in name for name in names)
