"""ESM-1b and ESM-1 as fairseq models: one implementation, two registered configs, named sizes.

Parameter names equal fair-esm's ``esm.model.esm1.ProteinBertModel``, so a fair-esm state dict
loads with ``strict=True`` and outputs match fair-esm's to float32 rounding.
"""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime
import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture
from fairseq.utils import safe_getattr
from torch import Tensor, nn

from ..alphabet import EsmAlphabet
from ..modules.attention import SelfAttention
from ..modules.contact_head import ContactPredictionHead
from ..modules.lm_head import RobertaLMHead
from ..modules.positional_embedding import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from ..modules.token_dropout import token_dropout
from ..modules.transformer_layer import TransformerLayer
from ..modules.variant import ESM1, ESM1B, EsmVariant
from ..pretrained import ShortLoadErrors, initialize_from_checkpoint

INIT_STD = 0.02


@dataclass
class EsmConfig(FairseqDataclass):
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
class Esm1bConfig(EsmConfig):
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
class Esm1Config(EsmConfig):
    encoder_layers: int = field(default=34, metadata={"help": "number of Transformer layers"})
    final_bias: bool = field(default=True, metadata={"help": "output projection bias; the flag turns it off"})


def init_esm_params(module: nn.Module) -> None:
    """BERT initialisation: weights ~ N(0, 0.02), biases and the padding embedding zero (meta-device safe)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=INIT_STD)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=INIT_STD)
        if module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
    elif isinstance(module, SelfAttention) and module.bias_k is not None:
        nn.init.normal_(module.bias_k, std=INIT_STD)
        nn.init.normal_(module.bias_v, std=INIT_STD)


class EsmModel(ShortLoadErrors, BaseFairseqModel):
    """The ESM Transformer; ``variant`` (set by the registered subclasses) selects ESM-1b or ESM-1."""

    variant: EsmVariant

    def __init__(self, cfg: EsmConfig, alphabet: EsmAlphabet) -> None:
        super().__init__()
        self.cfg = cfg
        self.padding_idx = alphabet.padding_idx
        self.mask_idx = alphabet.mask_idx
        self.token_dropout = cfg.token_dropout
        dim, eps, num_layers = cfg.encoder_embed_dim, self.variant.layer_norm_eps, cfg.encoder_layers
        self.embed_scale = math.sqrt(dim) if self.variant.scale_embeddings else 1.0
        self.embed_tokens = nn.Embedding(len(alphabet), dim, padding_idx=self.padding_idx)
        self.embed_positions = (
            LearnedPositionalEmbedding(cfg.max_positions, dim, self.padding_idx)
            if self.variant.learned_positions
            else SinusoidalPositionalEmbedding(dim, self.padding_idx)
        )
        self.layers = nn.ModuleList(
            TransformerLayer(dim, cfg.encoder_ffn_embed_dim, cfg.encoder_attention_heads, self.variant.add_bias_kv, eps)
            for _ in range(num_layers)
        )
        self.contact_head = ContactPredictionHead(
            num_layers * cfg.encoder_attention_heads, alphabet.prepend_bos, alphabet.append_eos, alphabet.eos()
        )
        self._build_output(cfg, len(alphabet))
        self.apply(init_esm_params)
        if self.variant.zero_mask_embedding:
            self._pin_mask_embedding_to_zero()

    def _pin_mask_embedding_to_zero(self) -> None:
        """Keep the ``<mask>`` row zero through training: fair-esm zeroes it on load, and the tied LM
        head would otherwise train it, so an exported model would give other logits in fair-esm."""
        with torch.no_grad():
            self.embed_tokens.weight[self.mask_idx].zero_()
        keep = torch.ones(self.embed_tokens.num_embeddings, 1)
        keep[self.mask_idx] = 0.0
        self.embed_tokens.weight.register_hook(lambda grad: grad * keep.to(grad))

    def _build_output(self, cfg: EsmConfig, vocab_size: int) -> None:
        """ESM-1b: embedding LayerNorms + tied RoBERTa head; ESM-1: free output matrix ``embed_out``."""
        dim, eps = cfg.encoder_embed_dim, self.variant.layer_norm_eps
        self.emb_layer_norm_before = self.emb_layer_norm_after = self.lm_head = None
        self.embed_out = self.embed_out_bias = None
        if self.variant.roberta_head:
            if cfg.emb_layer_norm_before:
                self.emb_layer_norm_before = nn.LayerNorm(dim, eps=eps)
            self.emb_layer_norm_after = nn.LayerNorm(dim, eps=eps)
            self.lm_head = RobertaLMHead(dim, self.embed_tokens.weight, eps)
        else:
            self.embed_out = nn.Parameter(torch.empty(vocab_size, dim).normal_(std=INIT_STD))
            if cfg.final_bias:
                self.embed_out_bias = nn.Parameter(torch.zeros(vocab_size))

    @classmethod
    def build_model(cls, cfg: EsmConfig, task) -> "EsmModel":
        """fairseq entry point: check the task's alphabet, build, optionally load pretrained weights."""
        alphabet = task.source_dictionary
        if getattr(alphabet, "name", None) != cls.variant.name:
            raise ValueError(
                f"the {cls.variant.name} model needs the {cls.variant.name} alphabet, but the task uses "
                f"{getattr(alphabet, 'name', type(alphabet).__name__)!r}; set --alphabet {cls.variant.name}"
            )
        model = cls(cfg, alphabet)
        if cfg.pretrained_checkpoint:
            initialize_from_checkpoint(model, cfg.pretrained_checkpoint)
        return model

    def max_positions(self) -> int:
        return self.cfg.max_positions

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def _embed(self, tokens: Tensor, padding_mask: Tensor) -> Tensor:
        """tokens (B, T) -> input of the first layer (B, T, C)."""
        x = self.embed_scale * self.embed_tokens(tokens)
        if self.token_dropout:
            x = token_dropout(x, tokens, self.mask_idx, padding_mask)
        x = x + self.embed_positions(tokens)
        if self.emb_layer_norm_before is not None:
            x = self.emb_layer_norm_before(x)
        if self.variant.zero_padding_embeddings:
            x = x * (~padding_mask).unsqueeze(-1).type_as(x)
        return x

    def _project(self, features: Tensor) -> Tensor:
        """Features (..., C) -> vocabulary logits (..., V)."""
        if self.lm_head is not None:
            return self.lm_head(features)
        return nn.functional.linear(features, self.embed_out, self.embed_out_bias)

    def forward(
        self,
        src_tokens: Tensor,
        repr_layers: Iterable[int] = (),
        need_head_weights: Optional[bool] = None,
        return_contacts: bool = False,
        masked_tokens: Optional[Tensor] = None,
    ) -> dict:
        """tokens (B, T) -> ``logits`` (B, T, V), or (N, V) at the True positions of ``masked_tokens``;
        ``representations`` {layer: (B, T, C)}; ``attentions`` (B, L, H, T, T) and ``contacts`` on request.

        As in fair-esm, ``return_contacts`` also returns the attention maps unless ``need_head_weights`` is
        False: then the contacts are folded in layer by layer and no (B, L, H, T, T) tensor is ever built."""
        if need_head_weights is None:
            need_head_weights = return_contacts  # fair-esm: contacts come with the maps they are made from
        stream_contacts = return_contacts and not need_head_weights
        padding_mask = src_tokens.eq(self.padding_idx)  # (B, T)
        x = self._embed(src_tokens, padding_mask)
        wanted = set(repr_layers)
        representations = {0: x} if 0 in wanted else {}
        key_padding_mask = padding_mask if padding_mask.any() else None
        contacts = self.contact_head.stream(src_tokens, padding_mask) if stream_contacts else None
        attentions = []
        for index, layer in enumerate(self.layers, start=1):
            x, attn = layer(x, key_padding_mask, need_head_weights or stream_contacts)
            if index in wanted:
                representations[index] = x
            if contacts is not None:
                contacts.add(attn)
            elif need_head_weights:
                attentions.append(attn)
            del attn  # the next layer must not run while a streamed layer's maps are still held
        if self.emb_layer_norm_after is not None:
            # the last layer's representation is reported after the final LayerNorm
            x = self.emb_layer_norm_after(x)
            if self.num_layers in wanted:
                representations[self.num_layers] = x
        features = x if masked_tokens is None else x[masked_tokens]  # (B, T, C) or (N, C)
        result = {"logits": self._project(features), "representations": representations}
        if contacts is not None:
            result["contacts"] = contacts.probabilities()
        elif need_head_weights:
            result["attentions"] = self._stack_attentions(attentions, padding_mask)
            if return_contacts:
                result["contacts"] = self.contact_head(src_tokens, result["attentions"])
        return result

    def _stack_attentions(self, attentions: list[Tensor], padding_mask: Tensor) -> Tensor:
        """Per-layer (B, H, T, S) -> (B, L, H, T, T): bias_kv column dropped, pad rows/columns zeroed."""
        stacked = torch.stack(attentions, dim=1)  # (B, L, H, T, S)
        if self.variant.add_bias_kv:
            stacked = stacked[..., :-1]
        keep = (~padding_mask).type_as(stacked)  # (B, T)
        return stacked * (keep[:, :, None] * keep[:, None, :])[:, None, None]

    @torch.no_grad()
    def predict_contacts(self, tokens: Tensor) -> Tensor:
        """Contact probabilities (B, T', T') between residues (specials removed), streamed over the layers:
        peak memory grows with one layer's attention maps, not all of them."""
        return self(tokens, need_head_weights=False, return_contacts=True)["contacts"]


@register_model("esm1b", dataclass=Esm1bConfig)
class Esm1bModel(EsmModel):
    """ESM-1b (Rives et al. 2021): pre-LN RoBERTa with learned positions and token dropout."""

    variant = ESM1B


@register_model("esm1", dataclass=Esm1Config)
class Esm1Model(EsmModel):
    """ESM-1: sinusoidal positions, scaled embeddings, learned attention bias key/value."""

    variant = ESM1


#: arch name -> (layers, embed dim, ffn dim, heads); small ones are named by their measured parameter count
ESM1B_ARCHS = {
    "esm1b_t33_650M_UR50S": (33, 1280, 5120, 20),
    "esm1b_t12_34M": (12, 480, 1920, 20),
    "esm1b_t6_8M": (6, 320, 1280, 20),
    "esm1b_t6_3M": (6, 192, 768, 12),
    "esm1b_t4_1M": (4, 128, 512, 8),
}
ESM1_ARCHS = {
    "esm1_t34_670M_UR50S": (34, 1280, 5120, 20),
    "esm1_t12_85M_UR50S": (12, 768, 3072, 12),
    "esm1_t6_43M_UR50S": (6, 768, 3072, 12),
    "esm1_t6_7M": (6, 320, 1280, 20),
}


def _register_size(model_name: str, arch_name: str, sizes: tuple[int, int, int, int]) -> None:
    """Register ``--arch arch_name``: fill the four size fields not already set on the command line."""
    keys = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads")

    def set_sizes(cfg) -> None:
        for key, value in zip(keys, sizes):
            setattr(cfg, key, safe_getattr(cfg, key, value))

    register_model_architecture(model_name, arch_name)(set_sizes)


for _arch, _sizes in ESM1B_ARCHS.items():
    _register_size("esm1b", _arch, _sizes)
for _arch, _sizes in ESM1_ARCHS.items():
    _register_size("esm1", _arch, _sizes)
