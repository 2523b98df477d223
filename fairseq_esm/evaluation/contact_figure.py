"""Contact-map pictures "predicted over true" (the ESM-1b paper's Figure 5 style).

One L x L image: above the diagonal (i < j) the predicted contact probabilities, on and below it the true
8 Å contact map (1 contact, 0 not); pairs with an unresolved residue are NaN there and drawn grey, so a
missing contact is never confused with a masked one. The top-L long-range predictions (separation >= 24,
both residues resolved, ranked as :mod:`fairseq_esm.modules.contact_metrics` ranks them) are marked as
true or false positives; their precision is the table's ``long_P@L``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fairseq_esm.modules.contact_metrics import RANGES, candidate_pairs


@dataclass
class ContactFigure:
    """What the picture draws: the combined map and the marked top-L long-range predictions."""

    values: np.ndarray  # (L, L) float: predicted above the diagonal, true 0/1 on/below it, NaN = masked
    true_positives: np.ndarray  # (k, 2) 0-based (i, j), i < j
    false_positives: np.ndarray  # (k, 2)
    long_precision: float  # fraction of true positives among the marked pairs (NaN without candidates)


def contact_figure(probs: np.ndarray, contacts: np.ndarray, resolved: np.ndarray) -> ContactFigure:
    """Combine predicted ``probs`` and true ``contacts`` (both (L, L)) with ``resolved`` (L,) into one map."""
    length = len(resolved)
    upper = np.triu(np.ones((length, length), dtype=bool), k=1)
    both_resolved = resolved[:, None] & resolved[None, :]
    truth = np.where(both_resolved, contacts.astype(np.float32), np.nan)
    values = np.where(upper, probs.astype(np.float32), truth)
    low, high = RANGES["long"]
    i, j = candidate_pairs(length, resolved, low, high)
    top = np.argsort(-probs[i, j], kind="stable")[:length]  # the metric's ranking: ties row-major
    pairs = np.stack([i[top], j[top]], axis=1)
    hit = contacts[i[top], j[top]].astype(bool)
    precision = float(hit.mean()) if len(top) else float("nan")
    return ContactFigure(values, pairs[hit], pairs[~hit], precision)


def save_contact_png(figure_data: ContactFigure, path: Path, name: str) -> None:
    """Write the picture: 1-based residue axes, colour scale [0, 1], masked pairs grey, TP/FP marked."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 4.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    size = len(figure_data.values)
    cmap = colormaps["Blues"].with_extremes(bad="#bdbdbd")  # grey: unresolved pairs in the true map
    image = axes.imshow(np.ma.masked_invalid(figure_data.values), cmap=cmap, vmin=0.0, vmax=1.0,
                        interpolation="nearest", extent=(0.5, size + 0.5, size + 0.5, 0.5))
    marker = max(2.0, 40.0 / math.sqrt(size))
    for pairs, colour, scale, label in ((figure_data.false_positives, "tab:red", 1.0, "false positive"),
                                        (figure_data.true_positives, "#00b000", 2.0, "true positive")):
        axes.scatter(pairs[:, 1] + 1, pairs[:, 0] + 1, s=marker * scale, c=colour, marker="o", linewidths=0,
                     label=f"{label} ({len(pairs)})")  # true positives drawn last, larger: they are rare
    if len(figure_data.true_positives) + len(figure_data.false_positives):
        axes.legend(loc="lower left", fontsize=7, title="top-L long-range", title_fontsize=7)
    axes.set_xlabel("residue (upper: predicted)")
    axes.set_ylabel("residue (lower: true 8 Å, grey: unresolved)")
    precision = "n/a" if math.isnan(figure_data.long_precision) else f"{figure_data.long_precision:.2f}"
    title = name if len(name) <= 40 else name[:37] + "..."
    axes.set_title(f"{title}: long-range P@L {precision}", fontsize=9)
    figure.colorbar(image, ax=axes, label="contact probability / contact")
    figure.savefig(path)
