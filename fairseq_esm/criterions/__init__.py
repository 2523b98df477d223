"""Criterion registrations."""

from . import bidirectional_lm, masked_lm  # noqa: F401
