"""Cross-validation folds over one protein's variants, as ProteinGym's supervised benchmark defines them
(Notin et al. 2023, ``fold_random_5``, ``fold_modulo_5``, ``fold_contiguous_5``).

- ``random``: every variant to a fold at random (a seeded permutation cut into K parts differing by at most
  one; ProteinGym draws each fold independently, so its parts differ in size by chance).
- ``modulo``: by position. The mutated positions, sorted, are numbered 0, 1, 2, …; position number ``r`` goes
  to fold ``r mod K``, so neighbouring positions land in different folds and a test position is never a
  training one.
- ``contiguous``: by region. The sorted mutated positions are cut into K runs of consecutive positions (the
  first ``n mod K`` runs one position longer), so each test fold is one region of the protein.

ProteinGym assigns these two position schemes on single mutants. A multi-mutant here goes to the fold of its
positions when they all share one, and is left out of that scheme (fold ``-1``, counted) when they do not, so
no position is ever in both the training and the test part of a fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fairseq_esm.errors import InputError
from fairseq_esm.io.mutations import Variant

SCHEMES = ("random", "modulo", "contiguous")
LEFT_OUT = -1


@dataclass
class FoldPlan:
    """One scheme's fold of every variant (``-1``: left out of this scheme)."""

    scheme: str
    folds: int
    ids: np.ndarray

    @property
    def left_out(self) -> int:
        """Variants in no fold (multi-mutants whose positions fall in different folds)."""
        return int((self.ids == LEFT_OUT).sum())

    def split(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) indices of one fold (0-based): test is the fold, train every other assigned variant."""
        return np.flatnonzero((self.ids != fold) & (self.ids != LEFT_OUT)), np.flatnonzero(self.ids == fold)


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold of each of n items: a seeded permutation cut into ``folds`` parts differing by at most one."""
    ids = np.empty(n, dtype=np.int64)
    for fold, part in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), folds)):
        ids[part] = fold
    return ids


def position_folds(positions: Sequence[int], scheme: str, folds: int) -> dict[int, int]:
    """Fold of each mutated position under ``modulo`` or ``contiguous``."""
    ordered = sorted(set(positions))
    if len(ordered) < folds:
        raise InputError(f"{scheme} folds need at least {folds} mutated positions; the variants mutate "
                         f"{len(ordered)} — lower --folds or drop the scheme from --fold-scheme")
    if scheme == "modulo":
        return {p: rank % folds for rank, p in enumerate(ordered)}
    if scheme == "contiguous":
        return {p: fold for fold, run in enumerate(np.array_split(np.array(ordered), folds)) for p in run.tolist()}
    raise ValueError(f"not a position scheme: {scheme!r}")


def assign_folds(variants: Sequence[Variant], scheme: str, folds: int, seed: int) -> FoldPlan:
    """The folds of ``variants`` under one of :data:`SCHEMES` (``seed`` matters to ``random`` only)."""
    if scheme == "random":
        return FoldPlan(scheme, folds, fold_ids(len(variants), folds, seed))
    if scheme not in SCHEMES:
        raise ValueError(f"unknown fold scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    of = position_folds([m.index for v in variants for m in v], scheme, folds)
    ids = np.array([next(iter(s)) if len(s := {of[m.index] for m in v}) == 1 else LEFT_OUT for v in variants],
                   dtype=np.int64)
    return FoldPlan(scheme, folds, ids)
