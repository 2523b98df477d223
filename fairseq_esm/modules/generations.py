"""What distinguishes the ESM generations (ESM-1, ESM-1b, ESM-2), in one place, so the model never switches on
names. Read the three records side by side: everything not listed here is shared."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Generation:
    """The architectural choices (and official checkpoint layout) of one ESM generation."""

    #: our model name (the registered fairseq model)
    name: str
    #: the alphabet (``esm1b`` for ESM-1b and ESM-2: the same 33 tokens)
    alphabet: str
    #: official files: ``args`` (``{"args": Namespace(arch=...), ...}``, fair-esm 1.x) or ``cfg``
    #: (``{"cfg": {"model": ...}, ...}``, the ESM-2 release)
    official_layout: str
    #: ``args.arch`` of the official fair-esm checkpoint files (``args`` layout)
    official_arch: str
    #: prefix of the size arguments in official ``args`` / ``cfg["model"]`` (``encoder_layers`` / ``decoder_layers``)
    official_args_prefix: str
    #: prefix of the Transformer's parameter names in official state dicts
    official_body_prefix: str
    #: prefix of ``lm_head.*`` in official state dicts
    official_head_prefix: str
    #: ``learned`` (RoBERTa table), ``sinusoidal`` (fixed, added to the embeddings) or ``rotary`` (rotated
    #: queries and keys in every attention; no table, no added vector)
    positions: str
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
    #: the feed-forward width is 4 x the model width (official ESM-2 configs do not store it)
    ffn_is_4x: bool = False


ESM_1B = Generation(
    name="esm1b",
    alphabet="esm1b",
    official_layout="args",
    official_arch="roberta_large",
    official_args_prefix="encoder_",
    official_body_prefix="encoder.sentence_encoder.",
    official_head_prefix="encoder.",
    positions="learned",
    scale_embeddings=False,
    layer_norm_eps=1e-5,
    add_bias_kv=False,
    zero_padding_embeddings=True,
    roberta_head=True,
    zero_mask_embedding=True,
)

ESM_1 = Generation(
    name="esm1",
    alphabet="esm1",
    official_layout="args",
    official_arch="protein_bert_base",
    official_args_prefix="decoder_",
    official_body_prefix="decoder.",
    official_head_prefix="decoder.",
    positions="sinusoidal",
    scale_embeddings=True,
    layer_norm_eps=1e-12,
    add_bias_kv=True,
    zero_padding_embeddings=False,
    roberta_head=False,
    zero_mask_embedding=False,
)

#: ESM-2 (Lin et al. 2023): ESM-1b's blocks and head with rotary positions instead of a learned table, no
#: LayerNorm before the first layer, and a ``<mask>`` embedding that is trained (not zeroed on load)
ESM_2 = Generation(
    name="esm2",
    alphabet="esm1b",
    official_layout="cfg",
    official_arch="ESM2",
    official_args_prefix="encoder_",
    official_body_prefix="encoder.sentence_encoder.",
    official_head_prefix="encoder.",
    positions="rotary",
    scale_embeddings=False,
    layer_norm_eps=1e-5,
    add_bias_kv=False,
    zero_padding_embeddings=True,
    roberta_head=True,
    zero_mask_embedding=False,
    ffn_is_4x=True,
)

GENERATIONS = {v.name: v for v in (ESM_1B, ESM_1, ESM_2)}
#: generations whose official files name an ``args.arch``
OFFICIAL_ARCHS = {v.official_arch: v for v in GENERATIONS.values() if v.official_layout == "args"}

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
    "esm2": {
        "esm2_t48_15B_UR50D": (48, 5120, 20480, 40),
        "esm2_t36_3B_UR50D": (36, 2560, 10240, 40),
        "esm2_t33_650M_UR50D": (33, 1280, 5120, 20),
        "esm2_t30_150M_UR50D": (30, 640, 2560, 20),
        "esm2_t12_35M_UR50D": (12, 480, 1920, 20),
        "esm2_t6_8M_UR50D": (6, 320, 1280, 20),
        "esm2_t4_1M": (4, 128, 512, 8),
    },
}


def generation_of_arch(arch: str | None) -> Generation | None:
    """The generation of a model name (``esm1b``) or named arch (``esm1b_t4_1M``); None for other models."""
    for name, sizes in NAMED_SIZES.items():
        if arch == name or arch in sizes:
            return GENERATIONS[name]
    return None


def arch_name(generation: Generation, sizes: tuple[int, int, int, int]) -> str:
    """The named arch with exactly these sizes, else the generic model name (``esm1b`` / ``esm1`` / ``esm2``)."""
    return next((arch for arch, known in NAMED_SIZES[generation.name].items() if known == sizes), generation.name)
