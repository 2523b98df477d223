"""Criterion registrations."""

from . import bidirectional_lm, masked_lm  # noqa: F401
from . import contact_prediction, secondary_structure  # noqa: F401
