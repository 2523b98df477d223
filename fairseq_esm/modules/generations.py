"""What distinguishes ESM-1b from ESM-1, in one place, so the model never switches on names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Generation:
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


ESM_1B = Generation(
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

ESM_1 = Generation(
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

GENERATIONS = {v.name: v for v in (ESM_1B, ESM_1)}
OFFICIAL_ARCHS = {v.official_arch: v for v in (ESM_1B, ESM_1)}

#: named sizes per generation, arch name -> (layers, embed dim, ffn dim, heads); small ones are named by their
#: measured parameter count. The fairseq plugin registers each as an ``--arch``; checkpoints map them back.
NAMED_SIZES = {
    "esm1b": {
        "esm1b_t33_650M_UR50S": (33, 1280, 5120, 20),
        "esm1b_t12_34M": (12, 480, 1920, 20),
        "esm1b_t6_8M": (6, 320, 1280, 20),
        "esm1b_t6_3M": (6, 192, 768, 12),
        "esm1b_t4_1M": (4, 128, 512, 8),
    },
    "esm1": {
        "esm1_t34_670M_UR50S": (34, 1280, 5120, 20),
        "esm1_t12_85M_UR50S": (12, 768, 3072, 12),
        "esm1_t6_43M_UR50S": (6, 768, 3072, 12),
        "esm1_t6_7M": (6, 320, 1280, 20),
    },
}


def generation_of_arch(arch: str | None) -> Generation | None:
    """The generation of a model name (``esm1b``) or named arch (``esm1b_t4_1M``); None for other models."""
    for name, sizes in NAMED_SIZES.items():
        if arch == name or arch in sizes:
            return GENERATIONS[name]
    return None


def arch_name(generation: Generation, sizes: tuple[int, int, int, int]) -> str:
    """The named arch with exactly these sizes, else the generic model name (``esm1b`` / ``esm1``)."""
    return next((arch for arch, known in NAMED_SIZES[generation.name].items() if known == sizes), generation.name)
