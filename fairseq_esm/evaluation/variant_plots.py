"""Predicted against measured variant effects: one scatter panel per (predictor, measured column) pair, in a
grid with one row per predictor and one column per measured column; Spearman's rho and n in each title."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

PANEL_SIZE = (4.2, 3.8)  # inches per panel
DPI = 110
MAX_POINTS = 20_000  # above this many variants a panel draws a seeded sample (rho is over all of them)


@dataclass
class Panel:
    """One predictor against one measured column, over the rows that have both."""

    predictor: str
    measured: str
    predicted_values: Sequence[float]
    measured_values: Sequence[float]

    @property
    def rho(self) -> float:
        """Spearman's rho (NaN for fewer than 3 points or a constant side)."""
        x, y = np.asarray(self.predicted_values, float), np.asarray(self.measured_values, float)
        if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            return math.nan
        from scipy.stats import spearmanr

        return float(spearmanr(x, y)[0])


def plot_scatter_grid(panels: Sequence[Panel], columns: int, path: str | Path) -> Path:
    """Draw ``panels`` row by row, ``columns`` to a row, into a PNG (Agg canvas: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = max(1, columns)
    rows = max(1, math.ceil(len(panels) / columns))
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels):
        x, y = np.asarray(panel.predicted_values, float), np.asarray(panel.measured_values, float)
        if len(x) > MAX_POINTS:
            keep = np.sort(np.random.default_rng(0).choice(len(x), MAX_POINTS, replace=False))
            x, y = x[keep], y[keep]
        ax.scatter(x, y, s=6, alpha=0.5, linewidths=0, color="tab:blue")
        ax.set_xlabel(f"{panel.predictor} (predicted)")
        ax.set_ylabel(f"{panel.measured} (measured)")
        ax.set_title(f"Spearman rho {panel.rho:.3f}, n={len(panel.predicted_values):,}", fontsize=10)
        ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
