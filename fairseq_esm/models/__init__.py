"""Model registrations: ESM-1, ESM-1b, the bidirectional LSTM baseline, the structure heads and the contact probe."""

import fairseq_esm.data  # noqa: F401  (settles fairseq's import-time logging first)
from fairseq_esm.models import bilinear_contact_probe, bilstm_lm, contact_resnet, esm, netsurf_ss8  # noqa: F401
