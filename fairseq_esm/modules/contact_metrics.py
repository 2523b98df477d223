"""Contact precision as the ESM papers report it: of the top L/k predicted pairs in a sequence-separation
range, the fraction that are contacts in the structure (L = protein length, k = 1, 2, 5).

Ranges (separation s = j - i): short 6 <= s < 12, medium 12 <= s < 24, long s >= 24. Pairs with an
unresolved residue are not candidates. Ties are broken by position (row-major, i < j). When a range
has fewer candidates than L/k, the precision is over all of them; with none it is NaN.
"""

from __future__ import annotations

import numpy as np

RANGES: dict[str, tuple[int, int | None]] = {"short": (6, 12), "medium": (12, 24), "long": (24, None)}
FRACTIONS: dict[str, int] = {"L": 1, "L/2": 2, "L/5": 5}


def candidate_pairs(length: int, resolved: np.ndarray, min_sep: int, max_sep: int | None) -> tuple[np.ndarray, ...]:
    """(i, j) index arrays of pairs i < j with ``min_sep <= j - i < max_sep`` and both residues resolved."""
    i, j = np.triu_indices(length, k=min_sep)
    keep = resolved[i] & resolved[j]
    if max_sep is not None:
        keep &= (j - i) < max_sep
    return i[keep], j[keep]


def top_k_precision(probs: np.ndarray, contacts: np.ndarray, pairs: tuple[np.ndarray, ...], k: int) -> float:
    """Fraction of contacts among the ``k`` highest-scoring ``pairs`` (NaN when there are none)."""
    i, j = pairs
    if len(i) == 0:
        return float("nan")
    order = np.argsort(-probs[i, j], kind="stable")[:k]
    return float(contacts[i[order], j[order]].mean())


def contact_precisions(probs: np.ndarray, contacts: np.ndarray, resolved: np.ndarray) -> dict[str, float]:
    """``{"long_P@L": ..., "long_P@L/5": ..., "long_random": ...}`` for every range: the top-L/k precisions
    and ``random``, the contact rate among the range's candidates (what random ranking scores on average)."""
    length = len(resolved)
    result = {}
    for name, (low, high) in RANGES.items():
        pairs = candidate_pairs(length, resolved, low, high)
        for label, divisor in FRACTIONS.items():
            result[f"{name}_P@{label}"] = top_k_precision(probs, contacts, pairs, max(1, length // divisor))
        result[f"{name}_random"] = float(contacts[pairs].mean()) if len(pairs[0]) else float("nan")
    return result


def mean_precisions(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over proteins, ignoring NaN (a range with no candidates in that protein)."""
    keys = rows[0].keys() if rows else []
    return {key: float(np.nanmean([row[key] for row in rows])) if any(np.isfinite(row[key]) for row in rows)
            else float("nan") for key in keys}
