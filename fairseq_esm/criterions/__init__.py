"""Criterion registrations."""

from . import masked_lm  # noqa: F401
