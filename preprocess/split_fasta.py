"""Same as ``fairseq-esm-split-fasta`` (fairseq_esm/cli/split_fasta.py): kept so ``python preprocess/split_fasta.py`` still works."""

from fairseq_esm.cli.split_fasta import cli

if __name__ == "__main__":
    cli()
