"""The pretrained ESM model under a supervised head: per-residue representations, frozen or fine-tuned.

Built from ``--pretrained-checkpoint`` (anything ``inference.loading.load_model`` reads) when the head model is
built; its weights are part of the head model's state dict, so ``fairseq-validate`` evaluates the weights saved in
the head's checkpoint (the file at ``--pretrained-checkpoint`` only fixes the shape and must still exist).
Proteins longer than the backbone's context are embedded in overlapping windows, overlaps averaged.
"""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime
from dataclasses import dataclass, field

import torch
from fairseq.dataclass import FairseqDataclass
from torch import Tensor, nn

from fairseq_esm.checkpoints import load_model, untrained_like
from fairseq_esm.checkpoints.pt_files import CheckpointError
from fairseq_esm.modules.batching import windows


@dataclass
class BackboneConfig(FairseqDataclass):
    pretrained_checkpoint: str = field(
        default="???", metadata={"help": "ESM model under the head: fairseq checkpoint, official .pt or HF folder"}
    )
    finetune_backbone: bool = field(default=False, metadata={"help": "train the backbone too (default: frozen)"})
    untrained_backbone: bool = field(
        default=False, metadata={"help": "same shape as the pretrained checkpoint, random init (--backbone-seed)"}
    )
    backbone_seed: int = field(default=1, metadata={"help": "seed of the --untrained-backbone initialisation"})
    representation_layer: int = field(
        default=-1, metadata={"help": "backbone layer whose representations feed the head (-1: final, 0: embeddings)"}
    )


class Backbone(nn.Module):
    """ESM model -> (B, L, C) representations of the residues (specials dropped), zero at padding."""

    def __init__(self, cfg: BackboneConfig, alphabet_name: str) -> None:
        super().__init__()
        model, alphabet = load_model(cfg.pretrained_checkpoint)
        wanted = model.generation.alphabet  # ESM-2 shares ESM-1b's alphabet
        if wanted != alphabet_name:
            raise CheckpointError(f"{cfg.pretrained_checkpoint} is an {model.generation.name} model (the {wanted} "
                                  f"alphabet) but the task uses the {alphabet_name} alphabet; set --alphabet {wanted}")
        if cfg.untrained_backbone:
            model = untrained_like(model, alphabet, cfg.backbone_seed)
        layer = model.num_layers if cfg.representation_layer == -1 else cfg.representation_layer
        if not 0 <= layer <= model.num_layers:
            raise CheckpointError(f"--representation-layer {cfg.representation_layer}: the backbone has layers "
                                  f"0..{model.num_layers} (-1 = final)")
        self.model, self.alphabet, self.layer = model, alphabet, layer
        self.finetune = cfg.finetune_backbone
        self.model.requires_grad_(self.finetune)
        self.context = model.max_positions() - alphabet.num_specials_added

    @property
    def embed_dim(self) -> int:
        return self.model.cfg.encoder_embed_dim

    def train(self, mode: bool = True) -> "Backbone":
        """A frozen backbone stays in eval mode (no dropout) while the head trains."""
        super().train(mode)
        self.model.train(mode and self.finetune)
        return self

    def _represent(self, residues: Tensor, lengths: Tensor) -> Tensor:
        """(B, W) residue ids (padded), lengths (B,) -> (B, W, C) from one forward pass."""
        pad = self.alphabet.padding_idx
        tokens = torch.full((residues.size(0), residues.size(1) + 2), pad, dtype=torch.long, device=residues.device)
        tokens[:, 0] = self.alphabet.cls_idx
        tokens[:, 1:-1] = residues
        if self.alphabet.append_eos:
            tokens[torch.arange(len(lengths)), lengths + 1] = self.alphabet.eos()
        if not self.alphabet.append_eos:
            tokens = tokens[:, :-1]
        hidden = self.model(tokens, repr_layers=[self.layer])["representations"][self.layer]
        return hidden[:, 1 : residues.size(1) + 1]

    def _windowed(self, residues: Tensor, length: int) -> Tensor:
        """One long protein (1, L) -> (1, L, C): its own overlapping windows, overlaps averaged."""
        total = residues.new_zeros(1, length, self.embed_dim, dtype=torch.float)
        count = residues.new_zeros(1, length, 1, dtype=torch.float)
        for start, end in windows(length, self.context, self.context // 4):
            total[:, start:end] += self._represent(residues[:, start:end], residues.new_tensor([end - start]))
            count[:, start:end] += 1
        return total / count

    def forward(self, src_tokens: Tensor, src_lengths: Tensor) -> Tensor:
        """Wrapped tokens (B, T) and residue counts (B,) -> (B, L, C), L = longest protein, zero at padding.
        Proteins that fit the context share one forward pass; each longer one is windowed on its own, so a
        protein's representation does not depend on the batch it is in."""
        width = int(src_lengths.max())
        residues = src_tokens[:, 1 : width + 1].masked_fill(
            torch.arange(width, device=src_tokens.device)[None, :] >= src_lengths[:, None], self.alphabet.padding_idx
        )
        short = src_lengths <= self.context
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()):
            hidden = residues.new_zeros(residues.size(0), width, self.embed_dim, dtype=torch.float)
            if short.any():
                fit = min(width, self.context)
                hidden[short, :fit] = self._represent(residues[short, :fit], src_lengths[short]).float()
            for row in torch.nonzero(~short).flatten().tolist():
                length = int(src_lengths[row])
                hidden[row, :length] = self._windowed(residues[row : row + 1, :length], length)[0]
        return hidden
