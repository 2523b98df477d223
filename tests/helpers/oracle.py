"""fair-esm, the numerical oracle: small random fair-esm models saved in the official release layout.

Tests build a model with fair-esm's own classes, write it as fair-esm's ``.pt`` files, and load the
same file through both fair-esm and this plugin, so any difference is ours.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import esm
import torch

OFFICIAL_ARCH = {"esm1b": "roberta_large", "esm1": "protein_bert_base"}

# fair-esm's loader calls a bare torch.load, which since torch 2.6 refuses the Namespace it stores
torch.serialization.add_safe_globals([argparse.Namespace])


def fair_esm_model(variant: str, seed: int = 0, layers: int = 3, dim: int = 64, ffn: int = 128, heads: int = 4,
                   max_positions: int = 128) -> esm.ProteinBertModel:
    """A small fair-esm model with every parameter drawn at random (LayerNorm gains around 1)."""
    torch.manual_seed(seed)
    args = argparse.Namespace(
        arch=OFFICIAL_ARCH[variant], layers=layers, embed_dim=dim, ffn_embed_dim=ffn, attention_heads=heads,
        max_positions=max_positions, token_dropout=variant == "esm1b", emb_layer_norm_before=True, final_bias=True,
    )
    model = esm.ProteinBertModel(args, esm.Alphabet.from_architecture(OFFICIAL_ARCH[variant]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            gain = "norm" in name and name.endswith("weight")
            param.copy_((1.0 if gain else 0.0) + 0.2 * torch.randn_like(param))
    return model.eval()


def write_official(model: esm.ProteinBertModel, path: Path) -> Path:
    """Save a fair-esm model as fair-esm's release files: prefixed keys + a contact-regression sibling."""
    variant = "esm1b" if model.model_version == "ESM-1b" else "esm1"
    prefix = "encoder_" if variant == "esm1b" else "decoder_"
    args = argparse.Namespace(arch=OFFICIAL_ARCH[variant], max_positions=model.args.max_positions)
    for name in ("layers", "embed_dim", "ffn_embed_dim", "attention_heads"):
        setattr(args, prefix + name, getattr(model.args, name))
    if variant == "esm1b":
        args.token_dropout = model.args.token_dropout
    else:
        args.final_bias = model.args.final_bias
    body, regression = {}, {}
    for key, value in model.state_dict().items():
        if key.startswith("contact_head."):
            regression[key] = value
        elif variant == "esm1":
            body["decoder." + key] = value
        else:
            body[("encoder." if key.startswith("lm_head.") else "encoder.sentence_encoder.") + key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"args": args, "model": body}, path)
    torch.save({"model": regression}, path.with_name(path.stem + "-contact-regression.pt"))
    return path
