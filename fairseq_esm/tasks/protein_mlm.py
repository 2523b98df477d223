"""The ``protein_mlm`` task: ESM masked-language-model pretraining on one protein per sample.

Reads fairseq-preprocess'd splits (``--srcdict fairseq_esm/dicts/esm1b.txt``), crops proteins
longer than ``--max-positions`` to a random window per epoch, masks 15% of residues BERT-style
(or all with ``<mask>``), and batches by ``--max-tokens``. Training crops and masks change with
the epoch; every other split is pinned to epoch 1 so the held-out set is the same every time.
``--cluster-sampling`` (UR50/D) makes an epoch one member per 50% cluster, redrawn every epoch
(``data/cluster_sampling.py``).
Data is checked before use (``data/integrity.py``): the dictionary, each split's ``.idx``/``.bin`` pair
and the token ids, so a corrupt or mismatched data-bin (or ``--pretrained-checkpoint``) stops fairseq-train
with one ``error:`` line.
At UniRef scale a rank holds no copy of the dataset: a split is memory-mapped and read record by record
(``data/stored_records.py``, no read of the whole ``.bin`` at load), and fairseq's batches are kept as two
arrays formed in vectorised O(N) (``data/epoch_batches.py``), the same batches as fairseq's own code; with
``--batch-cache-dir`` they are formed once per node and memory-mapped by its other ranks (``data/batch_cache.py``).
"""

# no `from __future__ import annotations`: fairseq reads the config field types at runtime

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from fairseq import utils
from fairseq.data import Dictionary
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task

from fairseq_esm.data.batch_cache import shared_batches
from fairseq_esm.data.cluster_sampling import ClusterSampledDataset, load_cluster_index
from fairseq_esm.data.crop import CROP_STREAM, CropDataset, crop_residues
from fairseq_esm.data.epoch_batches import Batches, CompactEpochBatchIterator
from fairseq_esm.data.integrity import (  # load_data_dictionary: the one loader, re-exported for protein_ss8
    CheckedRecords,
    load_data_dictionary,
)
from fairseq_esm.data.item_rng import item_rng
from fairseq_esm.data.masking import MASK_STRATEGIES, MaskedProteinDataset, MaskingScheme, mask_tokens, masking_scheme
from fairseq_esm.data.protein_dataset import ProteinMLMDataset
from fairseq_esm.data.sized import index_dtype
from fairseq_esm.data.stored_records import open_split
from fairseq_esm.modules.alphabet import Alphabet, load_alphabet
from fairseq_esm.tasks.esm_task import EsmTask, RunConfig

logger = logging.getLogger(__name__)

#: validation / test crops and masks are drawn as in this epoch, whatever the training epoch
HELD_OUT_EPOCH = 1


@dataclass
class ProteinMLMConfig(RunConfig):
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
    cluster_sampling: bool = field(
        default=False,
        metadata={"help": "UR50/D: the train split draws one member per 50% cluster per epoch "
                  "(cluster of each record from {split}.clusters.npy, see fairseq-esm-make-uniref-splits)"},
    )
    batch_cache_dir: Optional[str] = field(
        default=None,
        metadata={"help": "node-local directory (e.g. /dev/shm/$USER-$SLURM_JOB_ID): the first rank of a node forms "
                  "each epoch's batches and stores them there, the node's other ranks memory-map them"},
    )


@register_task("protein_mlm", dataclass=ProteinMLMConfig)
class ProteinMLMTask(EsmTask):
    """Masked language modelling of single proteins with the ESM alphabets."""

    cfg: ProteinMLMConfig

    def __init__(self, cfg: ProteinMLMConfig, alphabet: Alphabet, stored_dict: Dictionary) -> None:
        super().__init__(cfg, alphabet)
        self.stored_dict = stored_dict
        self.scheme = masking_scheme(
            alphabet, cfg.mask_prob, cfg.leave_unmasked_prob, cfg.random_token_prob, str(cfg.mask_strategy)
        )

    @classmethod
    def setup_task(cls, cfg: ProteinMLMConfig, **kwargs) -> "ProteinMLMTask":
        """Load ``dict.txt`` from the first data dir, refused unless it is an ESM data dictionary."""
        paths = utils.split_paths(cfg.data)
        if not paths:
            raise ValueError("protein_mlm needs a data directory")
        stored = load_data_dictionary(paths[0])
        alphabet = load_alphabet(str(cfg.alphabet))
        logger.info(f"{alphabet.name} alphabet: {len(alphabet)} types; data dictionary {paths[0]}/dict.txt matches")
        return cls(cfg, alphabet, stored)

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs) -> None:
        """Stored records → cropped → masked → length-sorted samples for ``split``."""
        self.datasets[split] = self.build_dataset(split, epoch, combine)

    def build_dataset(self, split: str, epoch: int = 1, combine: bool = False) -> ProteinMLMDataset:
        """The ``protein_mlm`` dataset of one split; training follows the epoch, other splits do not."""
        paths = utils.split_paths(self.cfg.data)
        data_dir = paths[(epoch - 1) % len(paths)]
        if data_dir != paths[0]:
            load_data_dictionary(data_dir)
        split_path = os.path.join(data_dir, split)
        records = open_split(split_path, self.stored_dict, combine=combine)
        if records is None:
            raise FileNotFoundError(f"dataset split {split!r} not found at {split_path}.{{bin,idx}}")
        records = CheckedRecords(records, self.stored_dict, split_path)
        is_train = split == self.cfg.train_subset
        fixed_epoch = None if is_train else HELD_OUT_EPOCH
        if is_train and self.cfg.cluster_sampling:  # before the crop: crops and masks stay per (seed, epoch, index)
            clusters = load_cluster_index(split_path, len(records))
            records = ClusterSampledDataset(records, clusters, self.cfg.seed, epoch)
            logger.info(f"{split}: one member of each of {len(records):,} clusters per epoch")
        cropped = CropDataset(
            records, self.alphabet, self.cfg.max_positions, self.stored_dict.eos(), self.cfg.seed, fixed_epoch
        )
        masked = MaskedProteinDataset(cropped, self.scheme, self.cfg.seed, fixed_epoch)
        logger.info(f"{split}: {len(records):,} proteins, {int(cropped.sizes.sum()):,} tokens after cropping")
        return ProteinMLMDataset(masked, self.alphabet.padding_idx, shuffle=is_train, seed=self.cfg.seed)

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1, num_shards=1,
                           shard_id=0, num_workers=0, epoch=1, data_buffer_size=0, disable_iterator_cache=False,
                           skip_remainder_batch=False, grouped_shuffling=False, update_epoch_batch_itr=False):
        """fairseq's ``FairseqTask.get_batch_iterator``, step for step, with the batches of a ``ProteinMLMDataset``
        held as two arrays (``data/epoch_batches.py``): the same batches, epoch order and shards, formed in
        vectorised O(N) from an int32 length order. Anything else (grouped shuffling) takes fairseq's path."""
        if not isinstance(dataset, ProteinMLMDataset) or grouped_shuffling:
            return super().get_batch_iterator(
                dataset, max_tokens, max_sentences, max_positions, ignore_invalid_inputs,
                required_batch_size_multiple, seed, num_shards, shard_id, num_workers, epoch, data_buffer_size,
                disable_iterator_cache, skip_remainder_batch, grouped_shuffling, update_epoch_batch_itr)
        can_reuse = not disable_iterator_cache and not update_epoch_batch_itr and self.can_reuse_epoch_itr(dataset)
        logger.info(f"can_reuse_epoch_itr = {can_reuse}")  # fairseq's log lines, which scripts look for
        if can_reuse and dataset in self.dataset_to_epoch_iter:
            return self.dataset_to_epoch_iter[dataset]
        dataset.set_epoch(epoch)

        def form_batches(dataset: ProteinMLMDataset) -> Batches:
            order = dataset.length_sorted_indices(index_dtype(len(dataset)))
            if max_positions is not None:
                order = self.filter_indices_by_size(order, dataset, max_positions, ignore_invalid_inputs)
            return Batches.build(order, dataset.sizes, max_tokens, max_sentences, required_batch_size_multiple,
                                 every_index=True)

        def make_batches(dataset: ProteinMLMDataset, epoch: int) -> Batches:
            logger.info(f"creating new batches for epoch {epoch}")
            if not self.cfg.batch_cache_dir:
                return form_batches(dataset)
            options = {"max_tokens": max_tokens, "max_sentences": max_sentences,
                       "multiple": required_batch_size_multiple, "max_positions": max_positions,
                       "ignore_invalid_inputs": ignore_invalid_inputs}
            return shared_batches(self.cfg.batch_cache_dir, dataset.sizes, dataset.tie_break(), options,
                                  lambda: form_batches(dataset))

        reuse_dataloader = getattr(self.cfg, "reuse_dataloader", True)
        rebuild_batches = getattr(self.cfg, "rebuild_batches", False)
        logger.info(f"reuse_dataloader = {reuse_dataloader}")
        logger.info(f"rebuild_batches = {rebuild_batches}")
        epoch_iter = CompactEpochBatchIterator(
            dataset=dataset, collate_fn=dataset.collater,
            batches=make_batches if rebuild_batches else make_batches(dataset, epoch),
            seed=seed, num_shards=num_shards, shard_id=shard_id, num_workers=num_workers, epoch=epoch,
            buffer_size=data_buffer_size, skip_remainder_batch=skip_remainder_batch,
            reuse_dataloader=reuse_dataloader, persistent_workers=getattr(self.cfg, "persistent_workers", True),
        )
        if can_reuse:
            self.dataset_to_epoch_iter[dataset] = epoch_iter
        return epoch_iter

    def stored_tokens(self, split: str):
        """The split's stored proteins (``<cls>`` … ``<eos>`` token tensors), integrity-checked as for training."""
        path = os.path.join(utils.split_paths(self.cfg.data)[0], split)  # the first of sharded data dirs
        dataset = open_split(path, self.stored_dict)
        if dataset is None:
            raise FileNotFoundError(f"split not found at {path}.{{bin,idx}}")
        return dataset


def held_out_masking(alphabet: Alphabet, sequence: str, index: int, seed: int, scheme: MaskingScheme,
                     budget: int) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) token arrays exactly as ``protein_mlm`` builds held-out record ``index``:
    the same seeded crop of a too-long protein, then the same seeded masking."""
    residues = np.asarray(alphabet.encode_residues(sequence), dtype=np.int64)
    window = crop_residues(residues, budget, item_rng(seed, HELD_OUT_EPOCH, index, CROP_STREAM))
    tokens = np.asarray(alphabet.wrap(window.tolist()), dtype=np.int64)
    return mask_tokens(tokens, scheme, item_rng(seed, HELD_OUT_EPOCH, index))
