"""The ``protein_ss8`` task: 8-state secondary structure per residue with a head on ESM representations.

Reads a data dir of ``fairseq-esm-structure-dataset`` (train / valid from DSSP labels of structures, ``test`` =
CB513), one protein per sample, batched by ``--max-tokens``. The backbone is the model's business
(``--pretrained-checkpoint``, ``models/backbone.py``); the task supplies the alphabet it must match and, with
``--feature-dim D``, extra per-residue features from ``{split}.features.npy`` (and, for contacts,
``--pair-feature-k K``: the MSA "cov" pair features).

    fairseq-train DATA --user-dir fairseq_esm --task protein_ss8 --arch netsurf_ss8 --criterion protein_ss8 \\
        --pretrained-checkpoint esm.pt --optimizer adam --lr 1e-3 --max-tokens 4096
    fairseq-validate DATA --user-dir fairseq_esm --task protein_ss8 --path checkpoint_best.pt --valid-subset test
"""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime
import logging
import os
from dataclasses import dataclass, field

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
        default=1024, metadata={"help": "longest protein in tokens (specials included) to batch; longer are skipped"}
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
    """SS8 (``H G I E B T S C``) per residue; unlabelled residues are never scored."""

    target = "ss8"
