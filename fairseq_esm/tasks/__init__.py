"""Task registrations."""

from . import protein_mlm  # noqa: F401
