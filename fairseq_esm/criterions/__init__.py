"""Criterion registrations."""

import fairseq_esm.data  # noqa: F401  (settles fairseq's import-time logging first)
from fairseq_esm.criterions import (  # noqa: F401
    bidirectional_lm,
    esm_masked_lm,
    mutational_effect,
    protein_contacts,
    protein_ss8,
)
