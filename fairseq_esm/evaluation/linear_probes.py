"""Linear probes of per-residue representations (ESM-1b paper, Table 3 and appendix "Linear projections").

- Secondary structure: multinomial logistic regression (L2, ``C`` fixed at :data:`SS8_C`, features
  standardised on the training residues) from one residue's representation to its DSSP 8-state label;
  scored as 8-class accuracy over the test residues that have a label.
- Contacts: two linear maps ``P``, ``Q`` (``C -> dim``, with vector biases) and a scalar bias ``b``:
  ``logit(i, j) = (P h_i + p) . (Q h_j + q) + b`` (``modules/bilinear_contact_probe.py``), fitted by
  fairseq-train's own loop (task ``contact_probe``, criterion ``protein_contacts``: binary cross-entropy over
  every resolved pair ``j - i >= 6`` of the training proteins; adam with decoupled weight decay, one protein
  per update, fixed epochs and seed); scored as Top-L long-range precision (``j - i >= 24``) per test protein.

:func:`cross_validate` fits both on all partitions but one and scores the held-out one, for every partition.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from fairseq_esm.criterions.protein_contacts import MIN_SEPARATION
from fairseq_esm.data.contact_probe import write_data_dir
from fairseq_esm.data.structure_labels_dataset import ss8_to_targets
from fairseq_esm.evaluation.probe_settings import ContactProbeConfig
from fairseq_esm.evaluation.scope_folds import LabelledDomain
from fairseq_esm.io.residues import RESIDUE_LETTERS
from fairseq_esm.modules.bilinear_contact_probe import BilinearContactProbe
from fairseq_esm.modules.contact_metrics import contact_precisions
from fairseq_esm.tasks.contact_probe_training import train_contact_probe
from fairseq_esm.tasks.fairseq_training import Optimisation

SS8_C = 1.0  # the paper found the penalty made no difference; fixed, never tuned on test partitions
SS8_MAX_ITER = 500
METRIC = "long_P@L"
METRIC_KEY = "contact_long_P@L"  # the name of the contact score in results


def onehot_features(sequences: Sequence[str]) -> list[np.ndarray]:
    """(L, 25) residue identity one-hot: the no-model baseline (no profile, no context)."""
    index = {letter: i for i, letter in enumerate(RESIDUE_LETTERS)}
    eye = np.eye(len(RESIDUE_LETTERS), dtype=np.float32)
    return [eye[[index.get(c, index["X"]) for c in seq]] for seq in sequences]


def ss8_targets(ss8: str) -> np.ndarray:
    """(L,) state index into :data:`SS8`, -1 where masked (the heads' target encoding)."""
    return ss8_to_targets(ss8).astype(np.int64)


def ss8_accuracy(train: Sequence[int], test: Sequence[int], domains: Sequence[LabelledDomain],
                 features: Sequence[np.ndarray]) -> tuple[float, float, list[tuple[int, int]]]:
    """(probe accuracy, majority-class accuracy, (correct, labelled) residues of each test domain): fit on
    ``train``, score ``test``; the accuracy is pooled over the test residues, not averaged over domains."""
    targets = {i: ss8_targets(domains[i].ss8) for i in (*train, *test)}

    def stack(items: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([features[i][targets[i] >= 0] for i in items])
        return x, np.concatenate([targets[i][targets[i] >= 0] for i in items])

    x_train, y_train = stack(train)
    x_test, y_test = stack(test)
    scaler = StandardScaler().fit(x_train)
    probe = LogisticRegression(C=SS8_C, max_iter=SS8_MAX_ITER).fit(scaler.transform(x_train), y_train)
    hits = probe.predict(scaler.transform(x_test)) == y_test
    bounds = np.cumsum([0] + [int((targets[i] >= 0).sum()) for i in test])
    per_domain = [(int(hits[a:b].sum()), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:])]
    majority = float((y_test == np.bincount(y_train).argmax()).mean())
    return float(hits.mean()), majority, per_domain


def _has_scored_pair(contacts: np.ndarray) -> bool:
    """True if the protein has a resolved pair ``j - i >= 6``: one the criterion trains on."""
    return bool((np.triu(np.ones(contacts.shape, dtype=bool), k=MIN_SEPARATION) & (contacts >= 0)).any())


def fit_contacts(features: Sequence[np.ndarray], contacts: Sequence[np.ndarray],
                 cfg: ContactProbeConfig = ContactProbeConfig()) -> BilinearContactProbe:
    """The bilinear probe fitted by fairseq-train's loop (task ``contact_probe``), one protein per update,
    ``cfg.epochs`` seeded passes; proteins without a scored pair are left out."""
    kept = [i for i, c in enumerate(contacts) if _has_scored_pair(c)]
    settings = Optimisation(cfg.epochs, cfg.lr, cfg.weight_decay, batch_size=1, seed=cfg.seed)
    with tempfile.TemporaryDirectory(prefix="contact_probe_") as work:
        data = write_data_dir(Path(work) / "data", {"train": ([features[i] for i in kept], [contacts[i] for i in kept])})
        checkpoint, _ = train_contact_probe(data, Path(work) / "checkpoints", cfg.dim, settings)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    probe = BilinearContactProbe(features[0].shape[1], cfg.dim)
    probe.load_state_dict(state)
    return probe.eval()


@torch.no_grad()
def contact_scores(probe: BilinearContactProbe, features: np.ndarray) -> np.ndarray:
    """(L, L) contact probabilities of one protein (row i < column j is what the metric reads)."""
    return torch.sigmoid(probe(torch.from_numpy(features))).numpy()


def contact_precision(train: Sequence[int], test: Sequence[int], domains: Sequence[LabelledDomain],
                      features: Sequence[np.ndarray], cfg: ContactProbeConfig) -> tuple[float, float, list[float]]:
    """(mean Top-L long-range precision over the scored test proteins, their mean random-ranking rate, each test
    protein's precision): NaN for a protein without a resolved long-range pair, which is not scored."""
    probe = fit_contacts([features[i] for i in train], [domains[i].contacts for i in train], cfg)
    rows = [contact_precisions(contact_scores(probe, features[i]), domains[i].contacts == 1,
                               domains[i].resolved) for i in test]
    per_domain = [row[METRIC] for row in rows]
    scored = [row for row in rows if np.isfinite(row[METRIC])]
    if not scored:
        return float("nan"), float("nan"), per_domain
    return float(np.mean([r[METRIC] for r in scored])), float(np.mean([r["long_random"] for r in scored])), per_domain


def summary(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (ddof 1) over partitions, and the values themselves."""
    finite = [v for v in values if np.isfinite(v)]
    return {"mean": float(np.mean(finite)) if finite else None,
            "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
            "partitions": [round(v, 4) if np.isfinite(v) else None for v in values]}


def domain_score(domain: LabelledDomain, partition: int, correct: int, labelled: int, precision: float) -> dict:
    """One tested domain's JSON row: SS8 accuracy over its ``labelled`` residues, its Top-L long-range precision
    (4 decimals; None where it has no labelled residue or no resolved long-range pair)."""
    def rounded(value: float) -> float | None:
        return round(float(value), 4) if np.isfinite(value) else None

    return {"domain": domain.name, "sccs": domain.sccs, "partition": partition, "residues": labelled,
            "ss8_accuracy": rounded(correct / labelled) if labelled else None, METRIC_KEY: rounded(precision)}


def cross_validate(domains: Sequence[LabelledDomain], features: Sequence[np.ndarray], parts: Sequence[int],
                   cfg: ContactProbeConfig = ContactProbeConfig(), desc: str = "probes",
                   progress: bool = True) -> dict:
    """Both probes on every held-out partition: per-partition scores, their mean ± std, chance levels, and the
    score of every domain in the one partition that tested it (``per_domain``, in domain order)."""
    folds = max(parts) + 1
    scores: dict[str, list] = {key: [] for key in ("ss8", "ss8_majority", "residues", "contact",
                                                   "contact_random", "proteins")}
    per_domain: list[dict] = [{}] * len(domains)
    for held in tqdm(range(folds), desc=desc, unit="partition", disable=not progress):
        train = [i for i, p in enumerate(parts) if p != held]
        test = [i for i, p in enumerate(parts) if p == held]
        accuracy, majority, ss8_counts = ss8_accuracy(train, test, domains, features)
        contact, random_rate, precisions = contact_precision(train, test, domains, features, cfg)
        for key, value in (("ss8", accuracy), ("ss8_majority", majority), ("contact", contact),
                           ("contact_random", random_rate), ("residues", sum(n for _, n in ss8_counts)),
                           ("proteins", int(np.isfinite(precisions).sum()))):
            scores[key].append(value)
        for i, (correct, labelled), precision in zip(test, ss8_counts, precisions):
            per_domain[i] = domain_score(domains[i], held, correct, labelled, precision)
    return {"ss8_accuracy": summary(scores["ss8"]), "ss8_majority": summary(scores["ss8_majority"]),
            METRIC_KEY: summary(scores["contact"]), "contact_random": summary(scores["contact_random"]),
            "test_residues": scores["residues"], "test_proteins": scores["proteins"], "per_domain": per_domain}
