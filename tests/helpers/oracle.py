"""fair-esm, the numerical oracle: small random fair-esm models saved in the official release layout.

Tests build a model with fair-esm's own classes, write it as fair-esm's ``.pt`` files, and load the
same file through both fair-esm and this plugin, so any difference is ours.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import esm
import torch
from esm.model.esm2 import ESM2

OFFICIAL_ARCH = {"esm1b": "roberta_large", "esm1": "protein_bert_base"}

# fair-esm's loader calls a bare torch.load, which since torch 2.6 refuses the Namespace it stores
torch.serialization.add_safe_globals([argparse.Namespace])


def fair_esm_model(variant: str, seed: int = 0, layers: int = 3, dim: int = 64, ffn: int = 128, heads: int = 4,
                   max_positions: int = 128) -> torch.nn.Module:
    """A small fair-esm model (``ProteinBertModel``; ``ESM2`` for ``esm2``, whose ffn is 4 x dim) with every
    parameter drawn at random (LayerNorm gains around 1), the spread shrinking with the width as 1/sqrt(dim) so
    that wider models keep activations of the same size (0.2 at dim 64)."""
    torch.manual_seed(seed)
    if variant == "esm2":
        model = ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads,
                     alphabet=esm.Alphabet.from_architecture("ESM-1b"), token_dropout=True)
    else:
        args = argparse.Namespace(
            arch=OFFICIAL_ARCH[variant], layers=layers, embed_dim=dim, ffn_embed_dim=ffn, attention_heads=heads,
            max_positions=max_positions, token_dropout=variant == "esm1b", emb_layer_norm_before=True,
            final_bias=True,
        )
        model = esm.ProteinBertModel(args, esm.Alphabet.from_architecture(OFFICIAL_ARCH[variant]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            gain = "norm" in name and name.endswith("weight")
            param.copy_((1.0 if gain else 0.0) + 0.2 * (64 / dim) ** 0.5 * torch.randn_like(param))
    return model.eval()


def official_name(variant: str, stem: str = "tiny") -> str:
    """A file name fair-esm reads as ``variant`` (it picks ESM-2's loader for names starting with esm2)."""
    return f"esm2_{stem}.pt" if variant == "esm2" else f"{stem}.pt"


def write_official(model: torch.nn.Module, path: Path) -> Path:
    """Save a fair-esm model as fair-esm's release files: prefixed keys + a contact-regression sibling."""
    if isinstance(model, ESM2):
        return write_official_esm2(model, path)
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


def write_official_esm2(model: ESM2, path: Path) -> Path:
    """ESM-2's release layout: ``{"cfg": {"model": sizes}, "model": prefixed keys}`` + a contact-regression
    sibling; fair-esm reads it as ESM-2 only under a name starting with ``esm2``."""
    assert path.name.startswith("esm2"), path
    layer = model.layers[0].self_attn
    sizes = argparse.Namespace(encoder_layers=model.num_layers, encoder_embed_dim=model.embed_dim,
                               encoder_attention_heads=layer.num_heads, token_dropout=model.token_dropout)
    body, regression = {}, {}
    for key, value in model.state_dict().items():
        if key.startswith("contact_head."):
            regression[key] = value
        else:
            body[("encoder." if key.startswith("lm_head.") else "encoder.sentence_encoder.") + key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"cfg": {"model": sizes}, "model": body}, path)
    torch.save({"model": regression}, path.with_name(path.stem + "-contact-regression.pt"))
    return path
