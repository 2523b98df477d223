"""Embedding pictures: the output embedding rows are fair-esm's, the classes partition the 20 amino acids,
and the CLI writes non-empty PNGs of the expected size (t-SNE and a histogram of a real pfam_auc run)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import esm
import numpy as np
import pytest

from fairseq_esm.checkpoints import load_model
from fairseq_esm.cli import pfam_auc, plots
from fairseq_esm.cli.common import run_main
from fairseq_esm.evaluation.embedding_plots import (
    BIOCHEMICAL_CLASSES,
    DPI,
    FIGSIZE,
    amino_acid_class,
    output_embeddings,
    tsne_2d,
)
from fairseq_esm.io.residues import CANONICAL_AMINO_ACIDS

STO = Path(__file__).resolve().parents[1] / "examples" / "data" / "pfam"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_classes_partition_the_twenty_amino_acids():
    letters = "".join(BIOCHEMICAL_CLASSES.values())
    assert sorted(letters) == sorted(CANONICAL_AMINO_ACIDS) and len(letters) == 20
    assert amino_acid_class("W") == "aromatic" and amino_acid_class("K") == "positive"
    with pytest.raises(KeyError):
        amino_acid_class("X")


@pytest.mark.parametrize("variant", ["esm1b", "esm1"])
def test_output_embeddings_are_fair_esm_rows(official_checkpoint, variant):
    path = official_checkpoint(variant, layers=1, dim=32, ffn=64)
    model, alphabet = load_model(path)
    reference, ref_alphabet = esm.pretrained.load_model_and_alphabet_local(str(path))
    weight = reference.lm_head.weight if variant == "esm1b" else reference.embed_out
    expected = weight.detach()[[ref_alphabet.get_idx(a) for a in CANONICAL_AMINO_ACIDS]].numpy()
    letters, vectors = output_embeddings(model, alphabet)
    assert letters == CANONICAL_AMINO_ACIDS and np.array_equal(vectors, expected)


def test_tsne_is_seeded(official_checkpoint):
    model, alphabet = load_model(official_checkpoint("esm1b", layers=1, dim=32, ffn=64))
    vectors = output_embeddings(model, alphabet)[1]
    first = tsne_2d(vectors, seed=3)
    assert first.shape == (20, 2) and np.isfinite(first).all()
    assert np.array_equal(first, tsne_2d(vectors, seed=3))


def test_cli_writes_pngs(official_checkpoint, tmp_path, capsys):
    checkpoint = official_checkpoint("esm1b", layers=2, dim=32, ffn=64)
    shutil.copy(STO / "globins4.sto", tmp_path / "globins4.sto")
    shutil.copy(STO / "Caudal_act.sto", tmp_path / "Caudal_act.sto")
    summary = tmp_path / "auc.json"
    assert run_main(pfam_auc.main, [str(checkpoint), "--sto-dir", str(tmp_path), "--max-pairs", "500",
                                    "--json", str(summary)]) == 0
    out = tmp_path / "pictures"
    argv = [str(checkpoint), "--out", str(out), "--untrained", "--auc-json", str(summary)]
    assert run_main(plots.main, argv) == 0
    expected = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))
    for name in ("tsne_trained.png", "tsne_untrained.png", "pfam_auc_hist.png"):
        assert (out / name).stat().st_size > 10_000 and png_size(out / name) == expected
    assert "hydrophobic AVLIM" in capsys.readouterr().out


def test_bad_auc_json_is_one_error_line(official_checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"families": [{"family": "x"}]}))
    assert run_main(plots.main, [str(official_checkpoint("esm1b", layers=1, dim=32, ffn=64)), "--out",
                                 str(tmp_path / "o"), "--auc-json", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not a fairseq-esm-pfam-auc --json summary" in err[0]
    assert not (tmp_path / "o").exists()
