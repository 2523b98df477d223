"""Model registrations: ESM-1 and ESM-1b."""

from . import esm  # noqa: F401
