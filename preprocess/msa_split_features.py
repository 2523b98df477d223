"""Same as ``fairseq-esm-msa-split-features`` (fairseq_esm/cli/msa_split_features.py): kept so ``python preprocess/msa_split_features.py`` still works."""

from fairseq_esm.cli.msa_split_features import cli

if __name__ == "__main__":
    cli()
