"""The ``protein_ss8`` task: 8-state secondary structure per residue with a head on ESM representations.

Reads a data dir of ``fairseq-esm-structure-dataset`` (train / valid from DSSP labels of structures, one
``test_NAME`` split per NetSurfP-format test set, ``test`` = all of them), one protein per sample, batched by
``--max-tokens``. The backbone is the model's business (``--pretrained-checkpoint``, ``models/backbone.py``); the
task supplies the alphabet it must match and, with ``--feature-dim D``, extra per-residue features from
``{split}.features.npy`` (and, for contacts, ``--pair-feature-k K``: the MSA "cov" pair features).

``--max-positions`` bounds the training proteins. A held-out split (any but ``--train-subset``) is scored whole
under ``protein_ss8``: the backbone windows proteins longer than its context, so only a model that cannot do so
bounds it (one ``error:`` line, or fairseq's counted warning with ``--skip-invalid-size-inputs-valid-test``), and a
protein over ``--max-tokens`` is a batch of its own.

    fairseq-train DATA --user-dir fairseq_esm --task protein_ss8 --arch netsurf_ss8 --criterion protein_ss8 \\
        --pretrained-checkpoint esm.pt --optimizer adam --lr 1e-3 --max-tokens 4096
    fairseq-validate DATA --user-dir fairseq_esm --task protein_ss8 --path checkpoint_best.pt \\
        --valid-subset test_cb513,test_ts115
"""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task

from fairseq_esm.data.structure_labels_dataset import StructureLabelsDataset
from fairseq_esm.errors import InputError
from fairseq_esm.modules.alphabet import Alphabet, load_alphabet
from fairseq_esm.tasks.esm_task import EsmTask, RunConfig
from fairseq_esm.tasks.protein_mlm import load_data_dictionary

logger = logging.getLogger(__name__)


@dataclass
class StructureTaskConfig(RunConfig):
    data: str = field(default="???", metadata={"help": "data dir of fairseq-esm-structure-dataset"})
    alphabet: ChoiceEnum(["esm1b", "esm1"]) = field(  # type: ignore[valid-type]
        default="esm1b", metadata={"help": "alphabet of the backbone: esm1b (<cls> ... <eos>) or esm1 (<cls> ...)"}
    )
    max_positions: int = field(
        default=1024, metadata={"help": "longest protein in tokens (specials included) to batch; longer are skipped "
                                "(protein_ss8: in training only, held-out proteins are windowed)"}
    )
    feature_dim: int = field(
        default=0, metadata={"help": "extra per-residue features from {split}.features.npy (0: none)"}
    )
    pair_feature_k: int = field(
        default=0, metadata={"help": "protein_contacts: K*K MSA cov pair features from {split}.msa_*.npy "
                             "(fairseq-esm-msa-split-features --cov-k K; 0: none)"}
    )


class StructureLabelsTask(EsmTask):
    """Per-residue (``ss8``) or per-pair (``contacts``) targets for a head on a pretrained ESM model."""

    cfg: StructureTaskConfig
    target = "ss8"

    def __init__(self, cfg: StructureTaskConfig, alphabet: Alphabet) -> None:
        super().__init__(cfg, alphabet)

    @classmethod
    def setup_task(cls, cfg: StructureTaskConfig, **kwargs) -> "StructureLabelsTask":
        """Check ``dict.txt`` of the data dir; the model's backbone is checked against ``--alphabet``."""
        if cfg.pair_feature_k and cls.target != "contacts":
            raise InputError(f"--pair-feature-k is for pair targets (protein_contacts), not {cls.target}")
        load_data_dictionary(cfg.data)
        return cls(cfg, load_alphabet(str(cfg.alphabet)))

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs) -> None:
        prefix = os.path.join(self.cfg.data, split)
        dataset = StructureLabelsDataset(prefix, self.alphabet, self.target, self.cfg.feature_dim,
                                         shuffle=split == self.cfg.train_subset, seed=self.cfg.seed,
                                         pair_feature_k=self.cfg.pair_feature_k)
        logger.info(f"{split}: {len(dataset):,} proteins, {int(dataset.residues.sum()):,} residues ({self.target})")
        self.datasets[split] = dataset


@register_task("protein_ss8", dataclass=StructureTaskConfig)
class SecondaryStructureTask(StructureLabelsTask):
    """SS8 (``H G I E B T S C``) per residue; unlabelled residues are never scored; held-out proteins of any length
    are scored (the backbone windows them)."""

    target = "ss8"
    #: the built model's ``max_positions()``: None = it windows proteins of any length (netsurf_ss8)
    model_positions: Optional[int] = None

    def build_model(self, cfg, from_checkpoint: bool = False):
        """Build the model and remember how long a protein it can score."""
        model = super().build_model(cfg, from_checkpoint)
        self.model_positions = model.max_positions()
        return model

    def filter_indices_by_size(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        """Training: fairseq's filter (``--max-positions``). A held-out split keeps every protein the model can
        score: all of them when it windows; otherwise longer ones stop with one line (or are skipped and counted
        with ``--skip-invalid-size-inputs-valid-test``)."""
        split = next((name for name, loaded in self.datasets.items() if loaded is dataset), None)
        if split is None or split == self.cfg.train_subset:
            return super().filter_indices_by_size(indices, dataset, max_positions, ignore_invalid_inputs)
        if self.model_positions is None:
            return indices
        sizes = dataset.sizes[indices]
        too_long = indices[sizes > self.model_positions]
        if len(too_long) and not ignore_invalid_inputs:
            longest = int(sizes.max()) - self.alphabet.num_specials_added
            raise InputError(f"{self.cfg.data}/{split}: {len(too_long)} proteins longer than the model's "
                             f"{self.model_positions} positions (the longest has {longest} residues) and the model "
                             "does not window long proteins; use a netsurf_ss8 model, or pass "
                             "--skip-invalid-size-inputs-valid-test to score the others")
        if len(too_long):
            logger.warning(f"{split}: {len(too_long):,} proteins longer than the model's {self.model_positions} "
                           f"positions skipped (--skip-invalid-size-inputs-valid-test)")
        return indices[sizes <= self.model_positions] if len(too_long) else indices
