"""ESM-1b, ESM-1 and ESM-2 registered with fairseq: the ``esm1b`` / ``esm1`` / ``esm2`` models, their configs and
named archs.

The network is :class:`fairseq_esm.modules.esm1.ESM1`; the registered classes add fairseq's model interface
(``build_model``, the task's alphabet check, ``--pretrained-checkpoint``) and keep its parameter names, so a
checkpoint of ``fairseq-train`` is also a state dict of the plain network.
"""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture
from fairseq.utils import safe_getattr

from fairseq_esm.checkpoints.pt_files import ShortLoadErrors, initialize_from_checkpoint
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.esm1 import ESM1
from fairseq_esm.modules.generations import ESM_1, ESM_1B, ESM_2, NAMED_SIZES, Generation


@dataclass
class EsmModelConfig(FairseqDataclass):
    encoder_layers: int = field(default=33, metadata={"help": "number of Transformer layers"})
    encoder_embed_dim: int = field(default=1280, metadata={"help": "model (embedding) dimension"})
    encoder_ffn_embed_dim: int = field(default=5120, metadata={"help": "feed-forward hidden dimension"})
    encoder_attention_heads: int = field(default=20, metadata={"help": "attention heads per layer"})
    max_positions: int = field(
        default=1024, metadata={"help": "longest input in tokens, <cls>/<eos> included (learned position table size)"}
    )
    token_dropout: bool = field(
        default=False, metadata={"help": "zero <mask> embeddings and rescale by 0.88 / (1 - observed mask ratio)"}
    )
    pretrained_checkpoint: Optional[str] = field(
        default=None,
        metadata={"help": "initialise weights from an official fair-esm .pt or a checkpoint of this plugin"},
    )


@dataclass
class Esm1bConfig(EsmModelConfig):
    token_dropout: bool = field(
        default=True,
        metadata={
            "help": "zero <mask> embeddings and rescale by 0.88 / (1 - observed mask ratio); "
            "on by default, the flag turns it off"
        },
    )
    emb_layer_norm_before: bool = field(
        default=True, metadata={"help": "LayerNorm the embeddings before the first layer; the flag turns it off"}
    )


@dataclass
class Esm2Config(Esm1bConfig):
    emb_layer_norm_before: bool = field(
        default=False,
        metadata={"help": "LayerNorm the embeddings before the first layer (not in ESM-2: off by default)"},
    )


@dataclass
class Esm1Config(EsmModelConfig):
    encoder_layers: int = field(default=34, metadata={"help": "number of Transformer layers"})
    final_bias: bool = field(default=True, metadata={"help": "output projection bias; the flag turns it off"})


class EsmModel(ShortLoadErrors, ESM1, BaseFairseqModel):
    """The ESM network as a fairseq model; ``generation`` (set by the registered subclasses) picks ESM-1b or ESM-1."""

    generation: Generation

    def __init__(self, cfg: EsmModelConfig, alphabet: Alphabet) -> None:
        super().__init__(cfg, alphabet, type(self).generation)

    @classmethod
    def build_model(cls, cfg: EsmModelConfig, task) -> "EsmModel":
        """fairseq entry point: check the task's alphabet, build, optionally load pretrained weights."""
        alphabet = task.source_dictionary
        wanted = cls.generation.alphabet
        if getattr(alphabet, "name", None) != wanted:
            raise ValueError(
                f"the {cls.generation.name} model needs the {wanted} alphabet, but the task uses "
                f"{getattr(alphabet, 'name', type(alphabet).__name__)!r}; set --alphabet {wanted}"
            )
        model = cls(cfg, alphabet)
        if cfg.pretrained_checkpoint:
            initialize_from_checkpoint(model, cfg.pretrained_checkpoint)
        return model


@register_model("esm1b", dataclass=Esm1bConfig)
class Esm1bModel(EsmModel):
    """ESM-1b (Rives et al. 2021): pre-LN RoBERTa with learned positions and token dropout."""

    generation = ESM_1B


@register_model("esm1", dataclass=Esm1Config)
class Esm1Model(EsmModel):
    """ESM-1: sinusoidal positions, scaled embeddings, learned attention bias key/value."""

    generation = ESM_1


@register_model("esm2", dataclass=Esm2Config)
class Esm2Model(EsmModel):
    """ESM-2 (Lin et al. 2023): ESM-1b's pre-LN blocks and tied head with rotary positions, no embedding
    LayerNorm before the first layer, token dropout."""

    generation = ESM_2


def _register_size(model_name: str, arch_name: str, sizes: tuple[int, int, int, int]) -> None:
    """Register ``--arch arch_name``: fill the four size fields not already set on the command line."""
    keys = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads")

    def set_sizes(cfg) -> None:
        for key, value in zip(keys, sizes):
            setattr(cfg, key, safe_getattr(cfg, key, value))

    register_model_architecture(model_name, arch_name)(set_sizes)


for _model, _archs in NAMED_SIZES.items():
    for _arch, _sizes in _archs.items():
        _register_size(_model, _arch, _sizes)
