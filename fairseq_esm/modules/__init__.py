"""Building blocks of the ESM Transformer."""
