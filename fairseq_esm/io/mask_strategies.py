"""protein_mlm's masking strategies, without torch or fairseq, so console scripts offer them in ``--help``."""

#: bert: 80% <mask> / 10% random canonical residue / 10% unchanged; all_mask: every target becomes <mask>
MASK_STRATEGIES = ("bert", "all_mask")
