"""ESM-1b's <mask> embedding row stays zero through training, as fair-esm assumes on load."""

import torch

from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel
from fairseq_esm.modules.alphabet import esm1b_alphabet


def test_mask_row_is_zero_at_init_and_after_adam_steps():
    alphabet = esm1b_alphabet()
    cfg = Esm1bConfig(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                      encoder_attention_heads=4, max_positions=64)
    model = Esm1bModel(cfg, alphabet)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    tokens = alphabet.tokenize("MKTAYIAKQRQISFVKSHFSRQ")[None].repeat(2, 1)
    tokens[:, 3] = alphabet.mask_idx
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(tokens)["logits"].transpose(1, 2), tokens)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weight = model.embed_tokens.weight
    assert torch.count_nonzero(weight[alphabet.mask_idx]) == 0
    assert torch.count_nonzero(weight[alphabet.index("K")]) > 0  # the other rows did train
