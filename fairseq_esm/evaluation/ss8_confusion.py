"""The 8x8 confusion matrix of SS8 predictions: counts, Q8 / Q3 from them, a TSV and a PNG.

Rows are the DSSP (true) state, columns the predicted one, both in ``H G I E B T S C`` order, one count per
labelled residue. Q3 reduces both states with DSSP's standard mapping (H,G,I -> H; E,B -> E; T,S,C -> C), as the
``protein_ss8`` criterion's ``q3`` does, so the two agree on the same predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fairseq_esm.evaluation.embedding_plots import DPI
from fairseq_esm.io.dssp import SS8, to_ss3

SS3 = "HEC"
#: SS8 index -> SS3 index
TO_SS3_INDEX = np.array([SS3.index(to_ss3(state)) for state in SS8], dtype=np.int64)


def confusion_counts(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(8, 8) int64 counts, ``[true, predicted]``, of labelled residues' SS8 indices (0..7)."""
    predicted, target = np.asarray(predicted, dtype=np.int64), np.asarray(target, dtype=np.int64)
    if predicted.shape != target.shape or (len(target) and (min(predicted.min(), target.min()) < 0
                                                            or max(predicted.max(), target.max()) >= len(SS8))):
        raise ValueError("predicted and target must be SS8 indices 0..7 of the same labelled residues")
    return np.bincount(target * len(SS8) + predicted, minlength=len(SS8) ** 2).reshape(len(SS8), len(SS8))


def q8(counts: np.ndarray) -> float:
    """Percent of residues on the diagonal."""
    return 100.0 * float(np.trace(counts)) / max(int(counts.sum()), 1)


def q3(counts: np.ndarray) -> float:
    """Percent of residues whose predicted and true states reduce to the same 3-state class."""
    same = TO_SS3_INDEX[:, None] == TO_SS3_INDEX[None, :]
    return 100.0 * float(counts[same].sum()) / max(int(counts.sum()), 1)


def write_tsv(counts: np.ndarray, path: str | Path) -> Path:
    """Counts as TSV: header ``dssp\\predicted`` then the 8 states; one row per true state."""
    path = Path(path)
    lines = ["\t".join(["dssp\\predicted", *SS8])]
    lines += ["\t".join([state, *(str(int(n)) for n in row)]) for state, row in zip(SS8, counts)]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_tsv(path: str | Path) -> np.ndarray:
    """The (8, 8) counts :func:`write_tsv` wrote."""
    rows = Path(path).read_text().splitlines()[1:]
    return np.array([[int(n) for n in row.split("\t")[1:]] for row in rows], dtype=np.int64)


def plot_confusion(counts: np.ndarray, path: str | Path, title: str) -> Path:
    """Heat map of each true state's row as shares (colour) with the counts written in the cells; a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=DPI)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, column), n in np.ndenumerate(counts):
        ax.text(column, row, f"{n:,}", ha="center", va="center", fontsize=7,
                color="white" if shares[row, column] > 0.5 else "black")
    ax.set_xticks(range(len(SS8)), list(SS8))
    ax.set_yticks(range(len(SS8)), [f"{state} ({int(n):,})" for state, n in zip(SS8, counts.sum(axis=1))])
    ax.set_xlabel("predicted state")
    ax.set_ylabel("DSSP state (labelled residues)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="share of the DSSP state's residues")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
