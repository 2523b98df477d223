"""The residue letters the ESM vocabularies carry, shared by every reader and by the alphabet."""

#: the 20 canonical amino acids; random BERT replacements are drawn only from these
CANONICAL_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
#: every residue letter the ESM alphabets carry (canonical + X B U Z O)
RESIDUE_LETTERS = "LAGVSERTIDPKQNFYMHWCXBUZO"
#: alignment gap characters (kept as tokens only on request)
GAP_SYMBOLS = ".-"
