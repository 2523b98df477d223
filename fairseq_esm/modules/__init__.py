"""The network: the ESM alphabet, the ESM-1/ESM-1b Transformer (``esm1.py``) and its building blocks (torch only)."""
