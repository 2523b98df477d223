"""Unsupervised contact prediction from attention maps (Rao et al. 2020, used by ESM-1b).

Every layer's and head's attention map, symmetrised and APC-corrected, is one feature per residue pair;
a sparse (L1) logistic regression over those layers x heads features gives the contact probability.
Official checkpoints ship that regression in ``<name>-contact-regression.pt``; here it can be fitted on
any structures and saved in the same layout, so fair-esm reads our file as a regression sibling too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from fairseq_esm.checkpoints.pt_files import REGRESSION_KEYS, CheckpointError, read_file
from fairseq_esm.inference.choices import DEFAULT_C, MIN_SEPARATION
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.batching import length_batches, pad_tokens
from fairseq_esm.modules.contact_head import apc, symmetrize
from fairseq_esm.modules.contact_metrics import candidate_pairs
from fairseq_esm.modules.esm1 import ESM1


@dataclass(frozen=True)
class Regression:
    """Fitted contact regression: one weight per layer x head feature, an intercept, how it was fitted."""

    coef: np.ndarray  # (layers * heads,)
    intercept: float
    info: dict = field(default_factory=dict)


def contact_features(tokens: Tensor, attentions: Tensor, alphabet: Alphabet) -> Tensor:
    """tokens (B, T), attentions (B, L, H, T, T) -> (B, T', T', L*H) symmetrised APC features, specials
    removed, computed exactly as ``ContactPredictionHead`` does before its regression."""
    if alphabet.append_eos:
        not_eos = tokens.ne(alphabet.eos_index).to(attentions)  # (B, T): eos sits at each row's own end
        attentions = attentions * (not_eos[:, None, :] * not_eos[:, :, None])[:, None, None]
        attentions = attentions[..., :-1, :-1]
    if alphabet.prepend_bos:
        attentions = attentions[..., 1:, 1:]
    batch, layers, heads, length, _ = attentions.shape
    features = apc(symmetrize(attentions.reshape(batch, layers * heads, length, length)))  # (B, LH, T', T')
    return features.permute(0, 2, 3, 1)


@torch.no_grad()
def attention_features(model: ESM1, alphabet: Alphabet, sequence: str) -> Tensor:
    """(L, L, layers*heads) contact features of one protein (float32, on CPU)."""
    tokens = alphabet.tokenize(sequence)[None].to(next(model.parameters()).device)
    attentions = model(tokens, need_head_weights=True)["attentions"]
    return contact_features(tokens, attentions, alphabet)[0].float().cpu()


def iter_predictions(model: ESM1, alphabet: Alphabet, sequences: Sequence[str], toks_per_batch: int = 2048
                     ) -> Iterator[tuple[int, np.ndarray]]:
    """``(index into sequences, (L, L) float32 contact probabilities)`` batch by batch (batched by length;
    padding does not change a map), so a caller can save each map as soon as it is computed."""
    device = next(model.parameters()).device
    lengths = [len(s) + alphabet.num_specials_added for s in sequences]
    for batch in length_batches(lengths, toks_per_batch):
        tokens = pad_tokens([alphabet.tokenize(sequences[i]) for i in batch], alphabet.padding_idx).to(device)
        with torch.no_grad():
            contacts = model.predict_contacts(tokens).float().cpu().numpy()  # (B, T', T')
        for row, index in enumerate(batch):
            size = len(sequences[index])
            yield index, np.ascontiguousarray(contacts[row, :size, :size])


def predict_batch(model: ESM1, alphabet: Alphabet, sequences: Sequence[str], toks_per_batch: int = 2048
                  ) -> list[np.ndarray]:
    """(L, L) float32 contact probabilities per protein, in input order."""
    result: list[np.ndarray] = [np.empty(0)] * len(sequences)
    for index, probs in iter_predictions(model, alphabet, sequences, toks_per_batch):
        result[index] = probs
    return result


def predict(model: ESM1, alphabet: Alphabet, sequence: str) -> np.ndarray:
    """(L, L) float32 contact probabilities of one protein."""
    return predict_batch(model, alphabet, [sequence])[0]


def pair_samples(features: Tensor | np.ndarray, contacts: np.ndarray, resolved: np.ndarray,
                 min_separation: int = MIN_SEPARATION) -> tuple[np.ndarray, np.ndarray]:
    """Training rows of one protein: features (N, F) and labels (N,) of the pairs i < j at least
    ``min_separation`` apart with both residues resolved."""
    i, j = candidate_pairs(len(resolved), np.asarray(resolved, dtype=bool), min_separation, None)
    features = np.asarray(features, dtype=np.float32)
    return features[i, j], np.asarray(contacts, dtype=bool)[i, j]


def fit_pairs(x: np.ndarray, y: np.ndarray, C: float = DEFAULT_C) -> Regression:
    """L1 logistic regression (scikit-learn, liblinear) on stacked pair rows. Features are standardised
    for the fit, so ``C`` means the same for any model, and the scaling is folded back into the weights:
    the head applies them to raw features."""
    from sklearn.linear_model import LogisticRegression  # heavy import: only when fitting

    if y.all() or not y.any():
        raise ValueError(f"cannot fit a contact regression: all {len(y):,} training pairs are "
                         f"{'contacts' if y.all() else 'non-contacts'}; give more or larger structures")
    x = x.astype(np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    classifier = LogisticRegression(C=C, l1_ratio=1.0, solver="liblinear", max_iter=1000)
    classifier.fit((x - mean) / scale, y)
    coef = classifier.coef_[0] / scale
    intercept = float(classifier.intercept_[0] - (coef * mean).sum())
    info = {"C": C, "pairs": len(y), "contacts": int(y.sum()),
            "nonzero_weights": int((coef != 0).sum()), "features": int(x.shape[1])}
    return Regression(coef.astype(np.float32), intercept, info)


def fit_regression(features_list: Sequence[Tensor | np.ndarray], contact_maps: Sequence[np.ndarray],
                   masks: Sequence[np.ndarray], min_separation: int = MIN_SEPARATION, C: float = DEFAULT_C
                   ) -> Regression:
    """Fit the contact regression on proteins: features (L, L, F), contacts (L, L), resolved masks (L,)."""
    rows = [pair_samples(f, c, m, min_separation) for f, c, m in zip(features_list, contact_maps, masks)]
    regression = fit_pairs(np.concatenate([x for x, _ in rows]), np.concatenate([y for _, y in rows]), C)
    regression.info["min_separation"] = min_separation
    return regression


def install_regression(model: ESM1, coef: np.ndarray, intercept: float) -> None:
    """Write fitted weights into ``model.contact_head.regression`` (what ``return_contacts`` uses)."""
    linear = model.contact_head.regression
    coef = np.asarray(coef, dtype=np.float32).reshape(-1)
    if coef.shape[0] != linear.in_features:
        raise CheckpointError(
            f"the regression has {coef.shape[0]} weights but the model has {linear.in_features} attention heads "
            f"({model.num_layers} layers x {linear.in_features // model.num_layers}); fit it on this model"
        )
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(coef)[None])
        linear.bias.fill_(float(intercept))


def regression_is_fitted(model: ESM1) -> bool:
    """False when the head still has its initial zero bias: a checkpoint of fairseq-train (the masked-LM
    loss never trains it) or an official file without its regression sibling."""
    return bool(model.contact_head.regression.bias.detach().ne(0).any())


def save_regression(path: str | Path, regression: Regression) -> Path:
    """Write fair-esm's regression layout (``{"model": {contact_head.regression.*}}``) plus ``fit`` info."""
    path = Path(path)
    weight, bias = REGRESSION_KEYS
    state = {weight: torch.from_numpy(np.asarray(regression.coef, dtype=np.float32))[None],
             bias: torch.tensor([regression.intercept], dtype=torch.float32)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "fit": dict(regression.info)}, path)
    return path


def load_regression(path: str | Path, allow_unsafe: bool = False) -> Regression:
    """Read a regression written by ``save_regression`` or an official ``-contact-regression.pt``.

    A file the checkpoint reader refuses keeps the reader's own message (an unsafe file names
    ``--allow-unsafe``), with what a regression file should hold added."""
    expected = f"expected a torch file holding {{'model': {list(REGRESSION_KEYS)}}}, as `fit` writes"
    try:
        data = read_file(path, allow_unsafe=allow_unsafe)
    except CheckpointError as err:
        raise CheckpointError(f"contact regression file: {err}; {expected}") from err
    state = data.get("model") if isinstance(data, dict) else None
    if not isinstance(state, dict) or any(key not in state for key in REGRESSION_KEYS):
        raise CheckpointError(f"{path} is not a contact regression file; {expected}")
    weight, bias = (state[key].float() for key in REGRESSION_KEYS)
    return Regression(weight.reshape(-1).numpy(), float(bias.reshape(-1)[0]), dict(data.get("fit", {})))
