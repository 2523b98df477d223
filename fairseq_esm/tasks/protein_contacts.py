"""The ``protein_contacts`` task: binary 8 Å contact maps with a 2D head on ESM representations.

Same data dir, backbone and feature plumbing as ``protein_ss8`` (``tasks/secondary_structure.py``); the target is
``{split}.contacts`` (L×L, ``-1`` where a residue is unresolved), so only splits built from structures (train,
valid) have it: CB513 has none. Memory grows with L²: ``--max-positions`` bounds the proteins batched.
``--pair-feature-k K`` adds the paper's MSA "cov" pair features (K*K maps, supplement 13), computed per protein
from the members ``fairseq-esm-msa-split-features --cov-k K`` stored.
"""

from fairseq.tasks import register_task

from fairseq_esm.tasks.protein_ss8 import StructureLabelsTask, StructureTaskConfig


@register_task("protein_contacts", dataclass=StructureTaskConfig)
class ContactPredictionTask(StructureLabelsTask):
    """Contacts between residue pairs; pairs with an unresolved residue are never scored."""

    target = "contacts"
