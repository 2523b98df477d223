"""The ``protein_mlm`` task: ESM masked-language-model pretraining on one protein per sample.

Reads fairseq-preprocess'd splits (``--srcdict fairseq_esm/dicts/esm1b.txt``), crops proteins
longer than ``--max-positions`` to a random window per epoch, masks 15% of residues BERT-style
(or all with ``<mask>``), and batches by ``--max-tokens``. Training crops and masks change with
the epoch; every other split is pinned to epoch 1 so the held-out set is the same every time.
"""


import logging
import os
from dataclasses import dataclass, field

from fairseq import utils
from fairseq.data import Dictionary, data_utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II

from ..alphabet import GAP_SYMBOLS, RESIDUE_LETTERS, EsmAlphabet, load_alphabet
from ..data.crop import CropDataset
from ..data.masking import MASK_STRATEGIES, MaskedProteinDataset, masking_scheme
from ..data.protein_dataset import ProteinMLMDataset

logger = logging.getLogger(__name__)

#: validation / test crops and masks are drawn as in this epoch, whatever the training epoch
HELD_OUT_EPOCH = 1


@dataclass
class ProteinMLMConfig(FairseqDataclass):
    data: str = field(
        default="???",
        metadata={"help": "colon-separated paths to fairseq-preprocess'd data directories (train cycles through them)"},
    )
    alphabet: ChoiceEnum(["esm1b", "esm1"]) = field(  # type: ignore[valid-type]
        default="esm1b", metadata={"help": "ESM vocabulary: esm1b (<cls> ... <eos>) or esm1 (<cls> ...)"}
    )
    max_positions: int = field(
        default=1024, metadata={"help": "max tokens per protein incl. specials; longer proteins are randomly cropped"}
    )
    mask_prob: float = field(default=0.15, metadata={"help": "fraction of residues selected as targets"})
    leave_unmasked_prob: float = field(default=0.1, metadata={"help": "fraction of targets left unchanged (bert)"})
    random_token_prob: float = field(
        default=0.1, metadata={"help": "fraction of targets replaced by a different canonical amino acid (bert)"}
    )
    mask_strategy: ChoiceEnum(list(MASK_STRATEGIES)) = field(  # type: ignore[valid-type]
        default="bert", metadata={"help": "bert: 80/10/10 mask/random/unchanged; all_mask: every target -> <mask>"}
    )
    seed: int = II("common.seed")
    train_subset: str = II("dataset.train_subset")


def check_residue_indices(stored: Dictionary, alphabet: EsmAlphabet, path: str) -> None:
    """Refuse a data dictionary whose residue ids differ from the alphabet the model embeds."""
    wrong = [
        f"{sym}: {stored.index(sym)} != {alphabet.index(sym)}"
        for sym in RESIDUE_LETTERS + GAP_SYMBOLS
        if stored.index(sym) != alphabet.index(sym)
    ]
    if wrong:
        raise ValueError(
            f"{path} does not match the {alphabet.name} alphabet ({', '.join(wrong)}); "
            "binarize with fairseq-preprocess --srcdict fairseq_esm/dicts/esm1b.txt"
        )


@register_task("protein_mlm", dataclass=ProteinMLMConfig)
class ProteinMLMTask(FairseqTask):
    """Masked language modelling of single proteins with the ESM alphabets."""

    cfg: ProteinMLMConfig

    def __init__(self, cfg: ProteinMLMConfig, alphabet: EsmAlphabet, stored_dict: Dictionary) -> None:
        super().__init__(cfg)
        self.alphabet = alphabet
        self.stored_dict = stored_dict
        self.scheme = masking_scheme(
            alphabet, cfg.mask_prob, cfg.leave_unmasked_prob, cfg.random_token_prob, str(cfg.mask_strategy)
        )

    @classmethod
    def setup_task(cls, cfg: ProteinMLMConfig, **kwargs) -> "ProteinMLMTask":
        """Load ``dict.txt`` from the first data dir and check it against the chosen alphabet."""
        paths = utils.split_paths(cfg.data)
        if not paths:
            raise ValueError("protein_mlm needs a data directory")
        dict_path = os.path.join(paths[0], "dict.txt")
        if not os.path.exists(dict_path):
            raise FileNotFoundError(f"no dictionary at {dict_path}; run fairseq-preprocess first")
        stored = Dictionary.load(dict_path)
        alphabet = load_alphabet(str(cfg.alphabet))
        check_residue_indices(stored, alphabet, dict_path)
        logger.info(f"{alphabet.name} alphabet: {len(alphabet)} types; data dictionary {dict_path} matches")
        return cls(cfg, alphabet, stored)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs) -> None:
        """Stored records → cropped → masked → length-sorted samples for ``split``."""
        self.datasets[split] = self.build_dataset(split, epoch, combine)

    def build_dataset(self, split: str, epoch: int = 1, combine: bool = False) -> ProteinMLMDataset:
        """The ``protein_mlm`` dataset of one split; training follows the epoch, other splits do not."""
        paths = utils.split_paths(self.cfg.data)
        split_path = os.path.join(paths[(epoch - 1) % len(paths)], split)
        records = data_utils.load_indexed_dataset(split_path, self.stored_dict, combine=combine)
        if records is None:
            raise FileNotFoundError(f"dataset split {split!r} not found at {split_path}.{{bin,idx}}")
        is_train = split == self.cfg.train_subset
        fixed_epoch = None if is_train else HELD_OUT_EPOCH
        cropped = CropDataset(
            records, self.alphabet, self.cfg.max_positions, self.stored_dict.eos(), self.cfg.seed, fixed_epoch
        )
        masked = MaskedProteinDataset(cropped, self.scheme, self.cfg.seed, fixed_epoch)
        logger.info(f"{split}: {len(records):,} proteins, {int(cropped.sizes.sum()):,} tokens after cropping")
        return ProteinMLMDataset(masked, self.alphabet.padding_idx, shuffle=is_train, seed=self.cfg.seed)

    def max_positions(self) -> int:
        return self.cfg.max_positions

    @property
    def source_dictionary(self) -> EsmAlphabet:
        return self.alphabet

    @property
    def target_dictionary(self) -> EsmAlphabet:
        return self.alphabet
