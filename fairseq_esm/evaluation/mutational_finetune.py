"""Fine-tuning the language model to regress measured mutational effects (Rives et al. 2021, section 7
and Methods "Mutational Effect"; Figure 7), with k-fold cross-validation over one protein's variants.

The head is the paper's: a variant's predicted score is the sum over its mutated positions ``M`` of
log p(mutant aa) - log p(wild-type aa). The paper does not say whether ``M`` is masked; we mask it (the
masked marginal of Meier et al. 2021, ``inference.variant_scoring``), so before any training the head
*is* the zero-shot masked-marginal score, and the input never shows the residue being scored. All
variants mutating the same positions share one masked forward of the wild type. The paper "regresses
the scaled mutational effect": we minimise the mean squared error between the head's score and the
measured score standardised with the training fold's mean and standard deviation.

Training is fairseq's own loop: each fold's training part is written as a ``mutational_effect`` data dir and
trained by fairseq-train's ``main`` (task and criterion ``mutational_effect``, ``tasks/mutational_training.py``)
from the given model; the trained checkpoint then scores the held-out fold with :class:`VariantHead`.

The folds follow one or more of ProteinGym's schemes (``evaluation.dms_folds``: random, by position modulo K,
by contiguous region), and every fold also scores the baselines of ``evaluation.variant_baselines`` on the
same test variants: the zero-shot head itself, BLOSUM62, and the per-position mean and one-hot ridge fitted on
the fold's training part alone.
"""

from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm import tqdm

from fairseq_esm.checkpoints import load_model
from fairseq_esm.data.mutational_effect import write_data_dir
from fairseq_esm.evaluation.dms_folds import assign_folds
from fairseq_esm.evaluation.variant_baselines import blosum62_scores, fitted_baselines
from fairseq_esm.inference.scoring import Query, window_query
from fairseq_esm.io.mutations import Variant
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.batching import length_batches, pad_tokens, residue_budget
from fairseq_esm.modules.esm1 import ESM1
from fairseq_esm.tasks.mutational_training import Optimisation, StartModel, train_mutational_effect, write_start


@dataclass
class FinetuneConfig:
    """Cross-validation and optimisation settings (fairseq's adam, decoupled weight decay, on the MSE of
    standardised scores)."""

    folds: int = 5
    epochs: int = 3
    lr: float = 1e-4
    weight_decay: float = 0.01
    batch_sequences: int = 8  # masked wild-type copies (distinct position sets) per optimiser step
    train_layers: Optional[int] = None  # None: the whole model; N: only the last N layers and the LM head
    seed: int = 1
    toks_per_batch: int = 4096  # for evaluation forwards
    schemes: tuple[str, ...] = ("random",)  # of evaluation.dms_folds.SCHEMES, each cross-validated in turn


class VariantHead:
    """The masked-marginal head over a fixed list of variants, grouped by their mutated positions."""

    def __init__(self, alphabet: Alphabet, wild_type: str, variants: Sequence[Variant], budget: int) -> None:
        keys = sorted({tuple(m.index for m in v) for v in variants})
        slot = {key: i for i, key in enumerate(keys)}
        self.mask_idx, self.pad_idx = alphabet.mask_idx, alphabet.padding_idx
        self.queries: list[Query] = [window_query(alphabet, wild_type, key, budget) for key in keys]
        self.members: list[list[int]] = [[] for _ in keys]  # variant indices per position set
        for i, v in enumerate(variants):
            self.members[slot[tuple(m.index for m in v)]].append(i)
        # per group (n_members, k) token ids of the mutant and wild-type residues, in position order
        self.mt = [torch.tensor([[alphabet.index(m.mt) for m in variants[i]] for i in g]) for g in self.members]
        self.wt = [torch.tensor([[alphabet.index(m.wt) for m in variants[i]] for i in g]) for g in self.members]
        self.size = len(variants)

    def forward(self, model: ESM1, groups: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(variant indices, scores) of every member of ``groups``: one masked forward per group."""
        device = next(model.parameters()).device
        tokens = pad_tokens([self.queries[g].tokens for g in groups], self.pad_idx)  # (B, T)
        read = torch.zeros_like(tokens, dtype=torch.bool)
        for row, g in enumerate(groups):
            tokens[row, list(self.queries[g].mask_at)] = self.mask_idx
            read[row, list(self.queries[g].read_at)] = True
        # only project the mutated positions: (N, V) in row-major order of ``read``
        logits = model(tokens.to(device), masked_tokens=read.to(device))["logits"]
        blocks = torch.log_softmax(logits.float(), dim=-1).split(read.sum(1).tolist())
        scores = []
        for g, block in zip(groups, blocks):  # block (k, V) shared by the group's variants
            at = torch.arange(block.size(0), device=device)
            mt, wt = self.mt[g].to(device), self.wt[g].to(device)  # (n, k)
            scores.append((block[at, mt] - block[at, wt]).sum(-1))  # (n,)
        index = torch.tensor([i for g in groups for i in self.members[g]], device=device)
        return index, torch.cat(scores)

    @torch.no_grad()
    def predict(self, model: ESM1, toks_per_batch: int = 4096) -> np.ndarray:
        """Scores of all variants, in their order, from the model in eval mode."""
        was_training = model.training
        model.eval()
        out = np.empty(self.size)
        for batch in length_batches([len(q.tokens) for q in self.queries], toks_per_batch):
            index, scores = self.forward(model, batch)
            out[index.cpu().numpy()] = scores.double().cpu().numpy()
        model.train(was_training)
        return out


def standardise(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(values - mean) / std with the reference's statistics (std 1 when the reference is constant)."""
    std = float(reference.std())
    return (values - reference.mean()) / (std if std > 0 else 1.0)


def variant_code(variant: Variant) -> str:
    """The variant as a code of the ``mutational_effect`` data dir: 1-based positions in the wild type."""
    return ":".join(f"{m.wt}{m.index + 1}{m.mt}" for m in variant)


def updates_per_run(variants: Sequence[Variant], cfg: FinetuneConfig) -> int:
    """fairseq-train's updates over ``variants``: one window per distinct position set, ``batch_sequences`` each."""
    windows = len({tuple(m.index for m in v) for v in variants})
    return cfg.epochs * math.ceil(windows / cfg.batch_sequences)


def spearman(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Spearman's rho (NaN when either side is constant)."""
    if len(predicted) < 3 or np.ptp(predicted) == 0 or np.ptp(measured) == 0:
        return math.nan
    return float(spearmanr(predicted, measured)[0])


#: what each fold reports a Spearman rho of (``<method>_rho``), in report order
METHODS = ("finetuned", "zero_shot", "blosum62", "position_mean", "onehot_ridge")


@dataclass
class FoldResult:
    """One held-out fold of one scheme: sizes, the Spearman rho on the test part of the fine-tuned model, the
    zero-shot head and each baseline, and the epoch losses."""

    fold: int
    n_train: int
    n_test: int
    zero_shot_rho: float
    finetuned_rho: float
    train_loss: list[float] = field(default_factory=list)
    scheme: str = "random"
    blosum62_rho: float = math.nan
    position_mean_rho: float = math.nan
    onehot_ridge_rho: float = math.nan


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation over folds."""
    return float(np.mean(values)), float(np.std(values))


def summarise(results: Sequence[FoldResult]) -> dict[str, dict[str, dict[str, float]]]:
    """Per scheme and method, mean and (population) std of Spearman rho over the folds where it is defined, and
    how many those are (a constant prediction, as the per-position mean gives on unseen positions, has none)."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for scheme in dict.fromkeys(r.scheme for r in results):
        summary[scheme] = {}
        for method in METHODS:
            values = [v for r in results if r.scheme == scheme and not math.isnan(v := getattr(r, f"{method}_rho"))]
            mean, std = mean_std(values) if values else (math.nan, math.nan)
            summary[scheme][method] = {"mean": mean, "std": std, "folds": len(values)}
    return summary


def finetune_fold(start: StartModel, alphabet: Alphabet, wild_type: str, train: Sequence[Variant],
                  targets: np.ndarray, test: Sequence[Variant], cfg: FinetuneConfig, fold: int,
                  device: torch.device, progress: bool, scheme: str = "") -> tuple[np.ndarray, list[float]]:
    """Fine-tune ``start`` on ``train`` through fairseq-train (in a temporary dir removed afterwards);
    returns the trained model's scores of ``test`` and each epoch's mean training loss (``scheme`` names the
    folds in the progress bar)."""
    settings = Optimisation(cfg.epochs, cfg.lr, cfg.weight_decay, cfg.batch_sequences, cfg.seed, cfg.train_layers)
    with tempfile.TemporaryDirectory(prefix=f"fold{fold + 1}-", dir=start.checkpoint.parent) as work:
        data = write_data_dir(Path(work) / "data", wild_type, {"train": ([variant_code(v) for v in train], targets)})
        checkpoint, losses = train_mutational_effect(start, data, Path(work) / "checkpoints", settings, device,
                                                     progress, f"{scheme} fold {fold + 1}/{cfg.folds}".lstrip(),
                                                     updates_per_run(train, cfg))
        trained, _ = load_model(checkpoint, device)
    budget = residue_budget(trained.max_positions(), alphabet)
    return VariantHead(alphabet, wild_type, test, budget).predict(trained, cfg.toks_per_batch), losses


def cross_validate(model: ESM1, alphabet: Alphabet, wild_type: str, variants: Sequence[Variant],
                   measured: Sequence[float], cfg: FinetuneConfig, progress: bool = True) -> list[FoldResult]:
    """Cross-validation under each of ``cfg.schemes``: per fold, fine-tune ``model`` on the other folds with
    fairseq-train's loop and compare its Spearman rho on the held-out fold with the zero-shot head's, BLOSUM62's
    and the baselines fitted on the same training part."""
    device = next(model.parameters()).device
    values = np.asarray(measured, dtype=np.float64)
    zero_shot = VariantHead(alphabet, wild_type, variants, residue_budget(model.max_positions(), alphabet)
                            ).predict(model, cfg.toks_per_batch)
    blosum = blosum62_scores(variants)
    plans = [assign_folds(variants, scheme, cfg.folds, cfg.seed) for scheme in cfg.schemes]  # all checked first
    results: list[FoldResult] = []
    with tempfile.TemporaryDirectory(prefix="finetune-variants-") as work:
        start = write_start(model, Path(work) / "start.pt")
        for plan in plans:
            for fold in range(cfg.folds):
                train, test = plan.split(fold)
                train_variants, test_variants = [variants[i] for i in train], [variants[i] for i in test]
                predicted, losses = finetune_fold(start, alphabet, wild_type, train_variants,
                                                  standardise(values[train], values[train]), test_variants,
                                                  cfg, fold, device, progress, plan.scheme)
                fitted = fitted_baselines(train_variants, values[train], test_variants, cfg.seed)
                results.append(FoldResult(
                    fold + 1, len(train), len(test), spearman(zero_shot[test], values[test]),
                    spearman(predicted, values[test]), losses, plan.scheme, spearman(blosum[test], values[test]),
                    spearman(fitted["position_mean"], values[test]), spearman(fitted["onehot_ridge"], values[test])))
                if progress:
                    r = results[-1]
                    tqdm.write(f"{r.scheme} fold {r.fold}: n_train {r.n_train:,}, n_test {r.n_test:,}, "
                               + ", ".join(f"{m} rho {getattr(r, f'{m}_rho'):.4f}" for m in METHODS),
                               file=sys.stderr)
    return results
