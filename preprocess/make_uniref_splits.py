"""Same as ``fairseq-esm-make-uniref-splits`` (fairseq_esm/cli/make_uniref_splits.py): kept so ``python preprocess/make_uniref_splits.py`` still works."""

from fairseq_esm.cli.make_uniref_splits import cli

if __name__ == "__main__":
    cli()
