"""Same as ``fairseq-esm-build-msas`` (fairseq_esm/cli/build_msas.py): kept so ``python preprocess/build_msas.py`` still works."""

from fairseq_esm.cli.build_msas import cli

if __name__ == "__main__":
    cli()
