"""The ESM Transformer of every generation (ESM-1, ESM-1b, ESM-2) as a plain torch module.

Parameter names equal fair-esm's (``esm.model.esm1.ProteinBertModel`` for ESM-1/ESM-1b, ``esm.model.esm2.ESM2``
for ESM-2), so a fair-esm state dict loads with ``strict=True`` and outputs match fair-esm's to float32
rounding. What differs between the generations is data (:mod:`fairseq_esm.modules.generations`), not branches
on names. The fairseq plugin registers this module as the ``esm1b`` / ``esm1`` / ``esm2`` models
(:mod:`fairseq_esm.models.esm`); checkpoints build it without fairseq.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch
from torch import Tensor, nn

from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.attention import SelfAttention
from fairseq_esm.modules.contact_head import ContactPredictionHead
from fairseq_esm.modules.generations import Generation
from fairseq_esm.modules.lm_head import RobertaLMHead
from fairseq_esm.modules.positional_embedding import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from fairseq_esm.modules.token_dropout import token_dropout
from fairseq_esm.modules.transformer_layer import TransformerLayer

INIT_STD = 0.02


@dataclass
class EsmConfig:
    """The sizes and switches of one ESM model (the fairseq plugin's ``--arch`` config has the same fields)."""

    encoder_layers: int = 33
    encoder_embed_dim: int = 1280
    encoder_ffn_embed_dim: int = 5120
    encoder_attention_heads: int = 20
    #: longest input in tokens, <cls>/<eos> included (learned position table size)
    max_positions: int = 1024
    #: zero <mask> embeddings and rescale by 0.88 / (1 - observed mask ratio)
    token_dropout: bool = False
    #: ESM-1b: LayerNorm the embeddings before the first layer (ESM-2 has none)
    emb_layer_norm_before: bool = True
    #: ESM-1: bias of the free output projection
    final_bias: bool = True


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


class ESM1(nn.Module):
    """The ESM Transformer of one :class:`Generation` (ESM-1b, ESM-1 or ESM-2) with ``cfg``'s sizes."""

    def __init__(self, cfg: Any, alphabet: Alphabet, generation: Generation) -> None:
        super().__init__()
        self.cfg = cfg
        self.generation = generation
        #: set by :func:`fairseq_esm.modules.precision.set_precision`: forward runs under autocast to this dtype
        self.compute_dtype: Optional[torch.dtype] = None
        self.padding_idx = alphabet.padding_idx
        self.mask_idx = alphabet.mask_idx
        self.token_dropout = cfg.token_dropout
        dim, eps, num_layers = cfg.encoder_embed_dim, self.generation.layer_norm_eps, cfg.encoder_layers
        self.embed_scale = math.sqrt(dim) if self.generation.scale_embeddings else 1.0
        self.embed_tokens = nn.Embedding(len(alphabet), dim, padding_idx=self.padding_idx)
        positions = self.generation.positions
        self.embed_positions = (
            LearnedPositionalEmbedding(cfg.max_positions, dim, self.padding_idx) if positions == "learned"
            else SinusoidalPositionalEmbedding(dim, self.padding_idx) if positions == "sinusoidal"
            else None  # rotary: inside every attention
        )
        self.layers = nn.ModuleList(
            TransformerLayer(dim, cfg.encoder_ffn_embed_dim, cfg.encoder_attention_heads, self.generation.add_bias_kv,
                             eps, rotary=positions == "rotary")
            for _ in range(num_layers)
        )
        self.contact_head = ContactPredictionHead(
            num_layers * cfg.encoder_attention_heads, alphabet.prepend_bos, alphabet.append_eos, alphabet.eos()
        )
        self._build_output(cfg, len(alphabet))
        self.apply(init_esm_params)
        if self.generation.zero_mask_embedding:
            self._pin_mask_embedding_to_zero()

    def _pin_mask_embedding_to_zero(self) -> None:
        """Keep the ``<mask>`` row zero through training: fair-esm zeroes it on load, and the tied LM
        head would otherwise train it, so an exported model would give other logits in fair-esm."""
        with torch.no_grad():
            self.embed_tokens.weight[self.mask_idx].zero_()
        keep = torch.ones(self.embed_tokens.num_embeddings, 1)
        keep[self.mask_idx] = 0.0
        self.embed_tokens.weight.register_hook(lambda grad: grad * keep.to(grad))

    def _build_output(self, cfg: Any, vocab_size: int) -> None:
        """ESM-1b: embedding LayerNorms + tied RoBERTa head; ESM-1: free output matrix ``embed_out``."""
        dim, eps = cfg.encoder_embed_dim, self.generation.layer_norm_eps
        self.emb_layer_norm_before = self.emb_layer_norm_after = self.lm_head = None
        self.embed_out = self.embed_out_bias = None
        if self.generation.roberta_head:
            if cfg.emb_layer_norm_before:
                self.emb_layer_norm_before = nn.LayerNorm(dim, eps=eps)
            self.emb_layer_norm_after = nn.LayerNorm(dim, eps=eps)
            self.lm_head = RobertaLMHead(dim, self.embed_tokens.weight, eps)
        else:
            self.embed_out = nn.Parameter(torch.empty(vocab_size, dim).normal_(std=INIT_STD))
            if cfg.final_bias:
                self.embed_out_bias = nn.Parameter(torch.zeros(vocab_size))

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
        if self.embed_positions is not None:
            x = x + self.embed_positions(tokens)
        if self.emb_layer_norm_before is not None:
            x = self.emb_layer_norm_before(x)
        if self.generation.zero_padding_embeddings:
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
        if self.compute_dtype is None:
            return self._forward(src_tokens, repr_layers, need_head_weights, return_contacts, masked_tokens)
        with torch.autocast(src_tokens.device.type, dtype=self.compute_dtype):
            result = self._forward(src_tokens, repr_layers, need_head_weights, return_contacts, masked_tokens)
        return {key: {layer: x.float() for layer, x in value.items()} if key == "representations" else value.float()
                for key, value in result.items()}

    def _forward(
        self,
        src_tokens: Tensor,
        repr_layers: Iterable[int],
        need_head_weights: Optional[bool],
        return_contacts: bool,
        masked_tokens: Optional[Tensor],
    ) -> dict:
        """:meth:`forward` at the model's own precision."""
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
        if self.generation.add_bias_kv:
            stacked = stacked[..., :-1]
        keep = (~padding_mask).type_as(stacked)  # (B, T)
        return stacked * (keep[:, :, None] * keep[:, None, :])[:, None, None]

    @torch.no_grad()
    def predict_contacts(self, tokens: Tensor) -> Tensor:
        """Contact probabilities (B, T', T') between residues (specials removed), streamed over the layers:
        peak memory grows with one layer's attention maps, not all of them."""
        return self(tokens, need_head_weights=False, return_contacts=True)["contacts"]
