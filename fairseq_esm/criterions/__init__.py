"""Criterion registrations."""

import fairseq_esm.data  # noqa: F401  (settles fairseq's import-time logging first)
from fairseq_esm.criterions import bidirectional_lm, esm_masked_lm, protein_contacts, protein_ss8  # noqa: F401
