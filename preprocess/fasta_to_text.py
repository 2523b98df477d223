"""Same as ``fairseq-esm-fasta-to-text`` (fairseq_esm/cli/fasta_to_text.py): kept so ``python preprocess/fasta_to_text.py`` still works."""

from fairseq_esm.cli.fasta_to_text import cli

if __name__ == "__main__":
    cli()
