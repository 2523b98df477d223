"""Model registrations: ESM-1, ESM-1b and the bidirectional LSTM baseline."""

from . import bilstm, esm  # noqa: F401
from . import contact_resnet, netsurf_head  # noqa: F401
