"""Pictures of what a model learned: t-SNE of the output amino-acid embeddings coloured by biochemical class
(Rives et al. 2021, Figure 1) and the histogram of per-family Pfam alignment AUCs (Table S1).

The classes follow Figure 1's legend: hydrophobic A V L I M, aromatic F W Y, polar S T N Q, positively charged
K R H, negatively charged D E, and the unique C G P. The output embeddings are the rows the LM head projects
onto: the tied input embedding in ESM-1b (``lm_head.weight``), the free ``embed_out`` matrix in ESM-1.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fairseq_esm.io.residues import CANONICAL_AMINO_ACIDS
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.esm1 import ESM1

for _noisy in ("matplotlib", "PIL"):  # fairseq sets the root logger to DEBUG on import
    logging.getLogger(_noisy).setLevel(logging.WARNING)

BIOCHEMICAL_CLASSES = {
    "hydrophobic": "AVLIM",
    "aromatic": "FWY",
    "polar": "STNQ",
    "positive": "KRH",
    "negative": "DE",
    "unique": "CGP",
}
CLASS_COLOURS = {"hydrophobic": "tab:orange", "aromatic": "tab:purple", "polar": "tab:green",
                 "positive": "tab:blue", "negative": "tab:red", "unique": "tab:gray"}
FIGSIZE, DPI = (6.0, 5.0), 100  # every PNG here is 600 x 500 pixels


def amino_acid_class(letter: str) -> str:
    """The Figure 1 class of one of the 20 standard amino acids."""
    for name, letters in BIOCHEMICAL_CLASSES.items():
        if letter in letters:
            return name
    raise KeyError(f"{letter!r} is not one of the 20 standard amino acids")


def output_embeddings(model: ESM1, alphabet: Alphabet) -> tuple[str, np.ndarray]:
    """(the 20 letters, their (20, C) output embedding rows) from the LM head of either ESM variant."""
    weight = model.lm_head.weight if model.lm_head is not None else model.embed_out
    rows = [alphabet.index(letter) for letter in CANONICAL_AMINO_ACIDS]
    return CANONICAL_AMINO_ACIDS, weight.detach().float().cpu().numpy()[rows]


def tsne_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, 2) t-SNE coordinates; perplexity scaled for 20 points (must stay below n)."""
    from sklearn.manifold import TSNE

    perplexity = min(5.0, (len(vectors) - 1) / 3)
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=FIGSIZE, dpi=DPI)


def plot_embeddings(points: np.ndarray, letters: str, path: str | Path, title: str) -> Path:
    """Scatter the 2-D points, each labelled with its letter and coloured by class; writes a PNG."""
    plt, fig, ax = _figure()
    classes = [amino_acid_class(letter) for letter in letters]
    for name, colour in CLASS_COLOURS.items():
        keep = [k for k, c in enumerate(classes) if c == name]
        ax.scatter(points[keep, 0], points[keep, 1], s=260, c=colour, alpha=0.55, label=name)
    for (x, y), letter in zip(points, letters):
        ax.annotate(letter, (x, y), ha="center", va="center", fontsize=11, weight="bold")
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(fontsize=8, loc="best", markerscale=0.5)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def run_label(run: dict) -> str:
    """Short legend label of a ``pfam_auc`` summary: trained/untrained and the checkpoint's folder and name."""
    checkpoint = Path(run["checkpoint"])
    return f"{'untrained' if run['untrained'] else 'trained'} {checkpoint.parent.name}/{checkpoint.name}"


def plot_auc_histogram(runs: list[dict], path: str | Path) -> Path:
    """Overlaid histograms of per-family AUCs, one per ``pfam_auc --json`` summary; writes a PNG."""
    plt, fig, ax = _figure()
    bins = np.linspace(0.0, 1.0, 51)
    for run in runs:
        aucs = [row["auc"] for row in run["families"]]
        label = f"{run_label(run)}: mean {np.mean(aucs):.3f}, {len(aucs)} families"
        ax.hist(aucs, bins=bins, alpha=0.5, label=label)
    ax.axvline(0.5, color="black", linestyle=":", linewidth=1)
    ax.set(xlabel="AUC, aligned vs unaligned residue pairs (cosine)", ylabel="families",
           title="Pfam alignment AUC per family")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
