"""Non-neural baselines the paper compares ESM against (the n-gram frequency models of its Appendix)."""
