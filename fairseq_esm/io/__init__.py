"""Protein I/O: FASTA, A3M, structures, DSSP labels and the MMseqs2/HMMER wrappers (no torch, no fairseq)."""
