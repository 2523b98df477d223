"""Task registrations."""

from . import protein_mlm  # noqa: F401
from . import contact_prediction, secondary_structure  # noqa: F401
