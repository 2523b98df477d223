"""The paper's bidirectional LSTM baseline (ELMo, Peters et al. 2018) as a fairseq model.

Two independent LSTM stacks share the input embedding: one reads the protein left to right, the
other right to left. Position i is predicted from the forward state after token i-1 and the
backward state after token i+1, concatenated and projected to the vocabulary, so the model never
sees the token it predicts and every residue of a protein can be scored in one pass.

Each layer is an ELMo-style projected LSTM (``nn.LSTM(proj_size=embed_dim)``): cells of
``hidden_dim`` units whose output is projected back to ``embed_dim``. With an untied output layer
over the concatenation this gives 28,411,425 parameters for ``bilstm_small`` and 113,493,537 for
``bilstm_large`` (paper: ~28.4M and ~113.4M; the LSTMs alone are 28,360,704 and 113,442,816).
"""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture
from fairseq.utils import safe_getattr
from torch import Tensor, nn

from fairseq_esm.checkpoints.pt_files import ShortLoadErrors
from fairseq_esm.modules.alphabet import Alphabet


@dataclass
class BiLstmConfig(FairseqDataclass):
    lstm_layers: int = field(default=3, metadata={"help": "LSTM layers in each direction"})
    lstm_embed_dim: int = field(
        default=512, metadata={"help": "token embedding dimension, also each layer's projected output"}
    )
    lstm_hidden_dim: int = field(default=1024, metadata={"help": "LSTM cell units per layer (>= embed dim)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on embeddings, between layers, before the output"})
    max_positions: int = field(
        default=1024, metadata={"help": "longest input in tokens fairseq lets through (the LSTM itself has no limit)"}
    )


def lstm_stack(cfg: BiLstmConfig) -> nn.LSTM:
    """One direction's stack of projected LSTM layers, (B, T, E) -> (B, T, E)."""
    embed, hidden = cfg.lstm_embed_dim, cfg.lstm_hidden_dim
    if hidden < embed:
        raise ValueError(f"--lstm-hidden-dim ({hidden}) must be at least --lstm-embed-dim ({embed})")
    proj_size = embed if hidden > embed else 0  # equal sizes need no projection
    dropout = cfg.dropout if cfg.lstm_layers > 1 else 0.0
    return nn.LSTM(embed, hidden, cfg.lstm_layers, batch_first=True, dropout=dropout, proj_size=proj_size)


def reversal_index(lengths: Tensor, max_len: int) -> Tensor:
    """(B, T) gather index reversing each row's first ``length`` positions and leaving padding in place."""
    positions = torch.arange(max_len, device=lengths.device).unsqueeze(0)  # (1, T)
    flipped = lengths.unsqueeze(1) - 1 - positions  # (B, T)
    return torch.where(positions < lengths.unsqueeze(1), flipped, positions)


def gather_time(x: Tensor, index: Tensor) -> Tensor:
    """x (B, T, C) reordered along time by ``index`` (B, T)."""
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


def shift_right(x: Tensor) -> Tensor:
    """(B, T, C) -> the state before each position: zeros at t=0, x[t-1] after."""
    return nn.functional.pad(x, (0, 0, 1, 0))[:, :-1]


@register_model("bilstm_lm", dataclass=BiLstmConfig)
class BiLstmLanguageModel(ShortLoadErrors, BaseFairseqModel):
    """ELMo-style bidirectional LSTM LM: logits at every position from both sides' context, never the token."""

    registered_name = "bilstm_lm"

    def __init__(self, cfg: BiLstmConfig, alphabet: Alphabet) -> None:
        super().__init__()
        self.cfg = cfg
        self.padding_idx = alphabet.padding_idx
        dim = cfg.lstm_embed_dim
        self.embed_tokens = nn.Embedding(len(alphabet), dim, padding_idx=self.padding_idx)
        nn.init.normal_(self.embed_tokens.weight, std=dim**-0.5)
        with torch.no_grad():
            self.embed_tokens.weight[self.padding_idx].zero_()
        self.forward_lstm = lstm_stack(cfg)
        self.backward_lstm = lstm_stack(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(2 * dim, len(alphabet))

    @classmethod
    def build_model(cls, cfg: BiLstmConfig, task) -> "BiLstmLanguageModel":
        """fairseq entry point: the vocabulary is the task's ESM alphabet."""
        return cls(cfg, task.source_dictionary)

    def max_positions(self) -> int:
        return self.cfg.max_positions

    def _lengths(self, src_tokens: Tensor) -> Tensor:
        """Tokens per row (B,), refusing batches whose padding is not all on the right."""
        not_pad = src_tokens.ne(self.padding_idx)  # (B, T)
        lengths = not_pad.sum(dim=1)
        positions = torch.arange(src_tokens.size(1), device=src_tokens.device)
        if not torch.equal(not_pad, positions.unsqueeze(0) < lengths.unsqueeze(1)):
            raise ValueError("bilstm_lm needs right-padded batches (<pad> only after each protein's last token)")
        return lengths

    def context(self, src_tokens: Tensor) -> Tensor:
        """tokens (B, T) -> (B, T, 2E): [forward state after t-1 ; backward state after t+1] at each t."""
        reverse = reversal_index(self._lengths(src_tokens), src_tokens.size(1))  # (B, T)
        x = self.dropout(self.embed_tokens(src_tokens))  # (B, T, E)
        # right padding: a left-to-right pass over a padded row leaves its real positions unchanged
        ahead, _ = self.forward_lstm(x)  # (B, T, E), has read tokens 0..t
        behind_reversed, _ = self.backward_lstm(gather_time(x, reverse))  # reversed frame, has read L-1..L-1-t
        behind = gather_time(shift_right(behind_reversed), reverse)  # has read L-1..t+1
        return self.dropout(torch.cat([shift_right(ahead), behind], dim=-1))

    def forward(self, src_tokens: Tensor, masked_tokens: Optional[Tensor] = None, **unused) -> dict:
        """tokens (B, T) -> ``logits`` (B, T, V), or (N, V) at the True positions of ``masked_tokens``."""
        features = self.context(src_tokens)
        if masked_tokens is not None:
            features = features[masked_tokens]  # only project what is scored
        return {"logits": self.output(features)}


#: arch name -> (layers, embed dim, hidden dim); the tiny one is named by its measured count (1,204,833).
#: It has no projection (hidden = embed): on CPU torch runs projected LSTMs without oneDNN, ~1.5x slower.
BILSTM_ARCHS = {
    "bilstm_small": (3, 512, 1024),
    "bilstm_large": (3, 512, 4096),
    "bilstm_t2_1M": (2, 192, 192),
}


def _register_size(arch_name: str, sizes: tuple[int, int, int]) -> None:
    """Register ``--arch arch_name``: fill the size fields not already set on the command line."""
    keys = ("lstm_layers", "lstm_embed_dim", "lstm_hidden_dim")

    def set_sizes(cfg) -> None:
        for key, value in zip(keys, sizes):
            setattr(cfg, key, safe_getattr(cfg, key, value))

    register_model_architecture("bilstm_lm", arch_name)(set_sizes)


for _arch, _sizes in BILSTM_ARCHS.items():
    _register_size(_arch, _sizes)
