"""Baselines for variant-effect prediction, evaluated on the same test folds as the fine-tuned model.

Fitted on a fold's training variants only:

- ``position_mean``: a variant's prediction is the mean, over its mutated positions, of the mean measured score
  of the training variants that mutate that position; a position no training variant mutates gets the mean of
  all training scores. (Under the ``modulo`` and ``contiguous`` schemes no test position is a training one, so
  this baseline predicts a constant and its Spearman rho is undefined: it measures what the ``random`` scheme
  lets a model learn about positions alone.)
- ``onehot_ridge``: scikit-learn ``Ridge`` on the one-hot encoding of the mutant sequence (20 indicators per
  position), with an intercept; alpha is chosen among :data:`RIDGE_ALPHAS` by an inner seeded 3-fold
  cross-validation on the training part (``GridSearchCV``, mean R²; among alphas within 1e-9 of the best, the
  largest: on few variants an inner test fold often shares no (position, residue) with its training part, and
  then every alpha predicts the same and the choice must not hang on rounding). It is fitted
  sparsely: each row holds the mutant sequence's one-hot minus the wild type's (+1 at (position, new residue),
  -1 at (position, wild-type residue)), and only the columns that vary in training are kept. Subtracting a
  constant row changes only the intercept and a constant column gets no weight, so the predictions are those
  of the dense full-sequence fit. The wild-type column of a position carries what training says about
  mutating that position at all, so this baseline learns position effects as well as substitutions; like the
  per-position mean it knows nothing of a position no training variant mutates (constant there: rho undefined
  under ``modulo`` and ``contiguous`` folds for single mutants).

Zero-shot, no fitting:

- ``blosum62``: the sum over a variant's mutations of BLOSUM62[wild type][mutant] (Biopython's matrix; a
  synonymous mutation scores the matrix diagonal; U and O count as X).
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Sequence

import numpy as np

from fairseq_esm.io.mutations import Variant

RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0)
RIDGE_TOL = 1e-8  # conjugate gradients run to this relative residual: the exact ridge solution, for practical purposes
DECIMALS = 9
RIDGE_TIE = 1e-9  # inner-CV mean R² this close to the best counts as a tie (the largest alpha wins)
INNER_FOLDS = 3
#: baselines fitted on training folds, then zero-shot ones, in report order
FITTED = ("position_mean", "onehot_ridge")
ZERO_SHOT = ("blosum62",)
LABELS = {"position_mean": "per-position mean", "onehot_ridge": "one-hot ridge", "blosum62": "BLOSUM62"}


@lru_cache(maxsize=1)
def blosum62() -> dict[tuple[str, str], float]:
    """BLOSUM62 as {(a, b): score} (Biopython's ``substitution_matrices.load("BLOSUM62")``)."""
    from Bio.Align import substitution_matrices

    matrix = substitution_matrices.load("BLOSUM62")
    return {(a, b): float(matrix[a][b]) for a in matrix.alphabet for b in matrix.alphabet}


def blosum62_scores(variants: Sequence[Variant]) -> np.ndarray:
    """Per variant, the sum of BLOSUM62[wt][mt] over its mutations."""
    table = blosum62()

    def letter(residue: str) -> str:
        return residue if (residue, residue) in table else "X"

    return np.array([sum(table[letter(m.wt), letter(m.mt)] for m in v) for v in variants], dtype=np.float64)


def position_mean_predict(train: Sequence[Variant], targets: np.ndarray, test: Sequence[Variant]) -> np.ndarray:
    """Per test variant, the mean over its positions of the training variants' mean score at each position."""
    targets = np.asarray(targets, dtype=np.float64)
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for variant, value in zip(train, targets):
        for m in variant:
            sums[m.index] = sums.get(m.index, 0.0) + float(value)
            counts[m.index] = counts.get(m.index, 0) + 1
    overall = float(targets.mean())
    return np.array([np.mean([sums[m.index] / counts[m.index] if m.index in counts else overall for m in v])
                     for v in test], dtype=np.float64)


def onehot_difference(variants: Sequence[Variant], columns: dict[tuple[int, str], int]):
    """Sparse (variants, columns) matrix: the mutant sequence's one-hot minus the wild type's, on ``columns``
    ((position, residue) pairs; pairs outside them are left out)."""
    from scipy.sparse import csr_matrix

    rows, cols, values = [], [], []
    for row, variant in enumerate(variants):
        for m in variant:
            if m.mt == m.wt:  # synonymous: the wild type's one-hot
                continue
            for pair, value in (((m.index, m.mt), 1.0), ((m.index, m.wt), -1.0)):
                if pair in columns:
                    rows.append(row)
                    cols.append(columns[pair])
                    values.append(value)
    return csr_matrix((values, (rows, cols)), shape=(len(variants), max(len(columns), 1)))


def onehot_columns(variants: Sequence[Variant]) -> dict[tuple[int, str], int]:
    """The (position, residue) one-hot columns that vary over ``variants``: their new and wild-type residues."""
    pairs = {pair for v in variants for m in v if m.mt != m.wt for pair in ((m.index, m.mt), (m.index, m.wt))}
    return {pair: i for i, pair in enumerate(sorted(pairs))}


def best_alpha_index(cv_results: dict) -> int:
    """``GridSearchCV``'s refit rule: the largest alpha whose mean inner R² is within :data:`RIDGE_TIE` of the best
    (the largest alpha when no inner fold gives an R²)."""
    scores = np.asarray(cv_results["mean_test_score"], dtype=np.float64)
    alphas = np.asarray(cv_results["param_alpha"], dtype=np.float64)
    finite = np.isfinite(scores)
    if not finite.any():
        return int(np.argmax(alphas))
    good = np.flatnonzero(finite & (scores >= scores[finite].max() - RIDGE_TIE))
    return int(good[np.argmax(alphas[good])])


def ridge_predict(train: Sequence[Variant], targets: np.ndarray, test: Sequence[Variant], seed: int) -> np.ndarray:
    """One-hot ridge regression fitted on ``train`` (alpha by inner cross-validation), predicting ``test``."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, KFold

    columns = onehot_columns(train)
    inner = KFold(min(INNER_FOLDS, len(train)), shuffle=True, random_state=seed)
    search = GridSearchCV(Ridge(solver="sparse_cg", tol=RIDGE_TOL), {"alpha": list(RIDGE_ALPHAS)}, cv=inner,
                          refit=best_alpha_index)
    with warnings.catch_warnings():  # R² of a one-variant inner fold is undefined; best_alpha_index skips it
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="One or more of the test scores are non-finite")
        search.fit(onehot_difference(train, columns), np.asarray(targets, dtype=np.float64))
    return search.predict(onehot_difference(test, columns))


def fitted_baselines(train: Sequence[Variant], targets: np.ndarray, test: Sequence[Variant], seed: int
                     ) -> dict[str, np.ndarray]:
    """Predictions on ``test`` of every baseline in :data:`FITTED`, fitted on ``train`` alone, rounded to
    :data:`DECIMALS` so that predictions equal but for float noise tie in Spearman's ranks (many test variants
    share a prediction: the intercept, a position's mean)."""
    return {"position_mean": np.round(position_mean_predict(train, targets, test), DECIMALS),
            "onehot_ridge": np.round(ridge_predict(train, targets, test, seed), DECIMALS)}
