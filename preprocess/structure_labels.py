"""Same as ``fairseq-esm-structure-labels`` (fairseq_esm/cli/structure_labels.py): kept so ``python preprocess/structure_labels.py`` still works."""

from fairseq_esm.cli.structure_labels import cli

if __name__ == "__main__":
    cli()
