"""Metrics and baselines."""
