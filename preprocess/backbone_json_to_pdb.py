"""Same as ``fairseq-esm-backbone-json-to-pdb`` (fairseq_esm/cli/backbone_json_to_pdb.py): kept so ``python preprocess/backbone_json_to_pdb.py`` still works."""

from fairseq_esm.cli.backbone_json_to_pdb import cli

if __name__ == "__main__":
    cli()
