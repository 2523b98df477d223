"""Same as ``fairseq-esm-structure-dataset`` (fairseq_esm/cli/structure_dataset.py): kept so ``python preprocess/structure_dataset.py`` still works."""

from fairseq_esm.cli.structure_dataset import cli

if __name__ == "__main__":
    cli()
