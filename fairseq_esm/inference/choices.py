"""The choices and defaults of the inference functions, without torch, so console scripts offer them in ``--help``
before anything heavy is imported."""

#: what :func:`fairseq_esm.inference.extract.extract_representations` can return per protein (fair-esm's names)
INCLUDE = ("mean", "per_tok", "bos", "contacts", "attentions")
#: proteins longer than the model's context: overlapping windows averaged, or the first residues only
LONG_MODES = ("window", "truncate")
#: zero-shot variant-effect strategies of Meier et al. 2021
STRATEGIES = ("masked-marginal", "wt-marginal", "mutant-marginal", "pseudo-likelihood")
#: masked-marginal of a multi-mutant: all positions masked together (the paper), or each alone and added
MULTI_MODES = ("joint", "additive")
MIN_SEPARATION = 6  # pairs closer in sequence are trivially in contact: never fitted on
DEFAULT_C = 0.15  # inverse L1 strength of the contact regression (sparse: most heads get weight 0)
