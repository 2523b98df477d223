"""What distinguishes ESM-1b from ESM-1, in one place, so the model never switches on names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EsmVariant:
    """The architectural choices (and official checkpoint layout) of one ESM generation."""

    #: our model / alphabet name
    name: str
    #: ``args.arch`` of the official fair-esm checkpoint files
    official_arch: str
    #: prefix of the size arguments in official ``args`` (``encoder_layers`` / ``decoder_layers``)
    official_args_prefix: str
    #: prefix of the Transformer's parameter names in official state dicts
    official_body_prefix: str
    #: prefix of ``lm_head.*`` in official state dicts
    official_head_prefix: str
    #: learned positions (RoBERTa) instead of fixed sinusoids
    learned_positions: bool
    #: multiply token embeddings by sqrt(embed_dim)
    scale_embeddings: bool
    layer_norm_eps: float
    #: learned key/value appended to every attention (fairseq ``add_bias_kv``)
    add_bias_kv: bool
    #: zero the embeddings of padding positions before the first layer
    zero_padding_embeddings: bool
    #: ``emb_layer_norm_after`` + RoBERTa LM head tied to the input embedding
    roberta_head: bool
    #: fair-esm zeroes the ``<mask>`` embedding row on load (token dropout); we keep it zero in training
    zero_mask_embedding: bool


ESM1B = EsmVariant(
    name="esm1b",
    official_arch="roberta_large",
    official_args_prefix="encoder_",
    official_body_prefix="encoder.sentence_encoder.",
    official_head_prefix="encoder.",
    learned_positions=True,
    scale_embeddings=False,
    layer_norm_eps=1e-5,
    add_bias_kv=False,
    zero_padding_embeddings=True,
    roberta_head=True,
    zero_mask_embedding=True,
)

ESM1 = EsmVariant(
    name="esm1",
    official_arch="protein_bert_base",
    official_args_prefix="decoder_",
    official_body_prefix="decoder.",
    official_head_prefix="decoder.",
    learned_positions=False,
    scale_embeddings=True,
    layer_norm_eps=1e-12,
    add_bias_kv=True,
    zero_padding_embeddings=False,
    roberta_head=False,
    zero_mask_embedding=False,
)

VARIANTS = {v.name: v for v in (ESM1B, ESM1)}
OFFICIAL_ARCHS = {v.official_arch: v for v in (ESM1B, ESM1)}
