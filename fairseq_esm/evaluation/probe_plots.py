"""Per-domain linear-probe scores as overlaid histograms (Rives et al. 2021, Figures S2 and S3).

One PNG per held-out level, two panels: 8-class SS accuracy of each test domain (over its labelled residues)
and its Top-L long-range contact precision, one histogram per scored row of ``fairseq-esm-probes`` (checkpoint,
untrained, one-hot), same bins; the dotted line is the chance row's table value where there is one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fairseq_esm.evaluation.embedding_plots import DPI
from fairseq_esm.evaluation.linear_probes import METRIC_KEY

PANELS = (("ss8_accuracy", "8-class SS accuracy per domain", "majority state"),
          (METRIC_KEY, "Top-L long-range contact precision per domain", "random ranking"))
BINS = np.linspace(0.0, 1.0, 26)
FIGSIZE = (11.0, 4.5)  # two panels side by side


def _figure():
    """A headless figure with the two panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(1, len(PANELS), figsize=FIGSIZE, dpi=DPI)


def per_domain_values(scores: dict, metric: str) -> np.ndarray:
    """The finite per-domain values of one metric in one row's level (domains without a score are left out)."""
    return np.array([row[metric] for row in scores["per_domain"] if row[metric] is not None], dtype=float)


def plot_probe_histograms(rows: list[dict], level: str, path: str | Path) -> Path:
    """Overlaid per-domain histograms of every row that has ``per_domain`` scores at ``level``; writes a PNG."""
    plt, fig, axes = _figure()
    scored = [row for row in rows if "per_domain" in row["levels"][level]]
    chance = [row for row in rows if "per_domain" not in row["levels"][level]]
    for ax, (metric, xlabel, chance_name) in zip(axes, PANELS):
        for row in scored:
            values = per_domain_values(row["levels"][level], metric)
            label = (f"{row['model']}: domain mean {values.mean():.3f} (n={len(values)})" if len(values)
                     else f"{row['model']}: no domain scored")
            ax.hist(values, bins=BINS, histtype="step", linewidth=1.8, label=label)
        for row in chance:
            value = row["levels"][level][metric]["mean"]
            if value is not None:
                ax.axvline(value, color="black", linestyle=":", linewidth=1,
                           label=f"chance ({chance_name}): {value:.3f}")
        ax.set(xlabel=xlabel, ylabel="test domains", xlim=(0, 1), ylim=(0, ax.get_ylim()[1] * 1.35))  # legend room
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Linear probes, {level}-level hold-out: each domain scored once, by the probe fitted without "
                 f"its partition", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
