"""Same as ``fairseq-esm-binarize`` (fairseq_esm/cli/binarize.py): kept so ``python preprocess/binarize_fasta.py`` still works."""

from fairseq_esm.cli.binarize import cli

if __name__ == "__main__":
    cli()
