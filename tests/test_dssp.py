"""DSSP secondary structure on real PDB entries (examples/data/structures/, provenance in its README), checked
against Biopython's shipped DSSP output for 2BEG and its Bio.PDB.DSSP wrapper; plus the labels CLI end to end."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fairseq_esm.cli.common import run_main
from fairseq_esm.io.dssp import DsspError, chain_labels, parse_dssp, to_ss3

ROOT = Path(__file__).resolve().parents[1]
STRUCTURES = ROOT / "examples" / "data" / "structures"
BIOPYTHON = Path("/work/shared/data/structures/biopython_pdb")
from fairseq_esm.cli import structure_labels


def fraction(ss8: str, states: str) -> float:
    """Share of labelled residues in any of ``states``."""
    labelled = [c for c in ss8 if c != "."]
    return sum(c in states for c in labelled) / len(labelled)


@pytest.mark.parametrize("name", ["1A7G.cif.gz", "1A8O.pdb.gz", "1LCD.pdb.gz", "2BEG.pdb.gz", "4CUP.cif.gz"])
def test_labels_align_with_sequence(name: str) -> None:
    labels = chain_labels(STRUCTURES / name)
    assert len(labels.ss8) == len(labels.chain.sequence) > 0
    assert set(labels.ss8) <= set("HGIEBTSC.")
    placed = len(labels.chain.observed) - labels.chain.unplaced  # every placed residue DSSP assigned is labelled
    assert labels.labelled.sum() == placed - labels.unassigned


def test_unresolved_residues_are_masked() -> None:
    labels = chain_labels(STRUCTURES / "2BEG.pdb.gz", "B")  # residues 1-16 in SEQRES, no atoms
    assert labels.ss8[:16] == "." * 16 and "." not in labels.ss8[16:]
    np.testing.assert_array_equal(labels.labelled, labels.chain.resolved)


def test_helix_and_strand_fractions() -> None:
    helical = chain_labels(STRUCTURES / "1LCD.pdb.gz").ss8  # lac repressor headpiece: three α-helices
    assert fraction(helical, "HGI") > 0.4 and fraction(helical, "EB") < 0.05
    strand = chain_labels(STRUCTURES / "2BEG.pdb.gz", "A").ss8  # amyloid fibril: β-strands between chains
    assert fraction(strand, "EB") > 0.5 and fraction(strand, "HGI") < 0.05


def test_matches_biopython_reference_dssp_file() -> None:
    with gzip.open(BIOPYTHON / "2BEG.dssp.gz", "rt") as handle:  # DSSP output shipped with Biopython's tests
        reference = parse_dssp(handle.read())
    for chain in "ABCDE":
        assert chain_labels(STRUCTURES / "2BEG.pdb.gz", chain).ss8[16:] == "".join(r[3] for r in reference[chain])


def test_matches_biopython_wrapper(tmp_path: Path) -> None:
    from Bio.PDB import DSSP, MMCIFParser
    plain = tmp_path / "1A7G.cif"
    plain.write_bytes(gzip.decompress((STRUCTURES / "1A7G.cif.gz").read_bytes()))
    model = MMCIFParser(QUIET=True).get_structure("1A7G", str(plain))[0]
    try:
        wrapped = DSSP(model, str(plain), dssp="mkdssp")
    except Exception as err:  # Biopython versions that cannot drive mkdssp 4
        pytest.skip(f"Bio.PDB.DSSP does not run mkdssp here: {err}")
    theirs = "".join(wrapped[key][2] for key in wrapped.keys() if key[0] == "E")
    theirs = theirs.replace("-", "C").replace("P", "C")
    assert chain_labels(plain, "E").ss8 == theirs


def test_three_states() -> None:
    assert to_ss3("HGIEBTSC.") == "HHHEECCC."
    labels = chain_labels(STRUCTURES / "1A7G.cif.gz")
    assert labels.ss3.count("H") == sum(labels.ss8.count(c) for c in "HGI")
    assert labels.ss3.count("E") == sum(labels.ss8.count(c) for c in "EB") and set(labels.ss3) <= set("HEC.")


def test_cli_end_to_end(tmp_path: Path, capsys) -> None:
    specs = [str(STRUCTURES / "1A7G.cif.gz"), str(STRUCTURES / "2BEG.pdb.gz") + ":C", str(STRUCTURES / "1LCD.pdb.gz:Q")]
    assert run_main(structure_labels.main, specs + ["--out", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "2 chains written, 1 skipped" in out.out and "16 unresolved" in out.out and "no protein chain 'Q'" in out.err
    fasta = (tmp_path / "labels.fasta").read_text().split()
    ss8 = (tmp_path / "ss8.txt").read_text().split("\n")[:-1]
    assert fasta[0::2] == [">1A7G_E", ">2BEG_C"] and [len(s) for s in fasta[1::2]] == [len(s) for s in ss8]
    contacts = np.load(tmp_path / "contacts" / "2BEG_C.npy")
    assert contacts.shape == (42, 42) and (contacts[:16] == -1).all() and (contacts[:, :16] == -1).all()
    assert set(np.unique(contacts[16:, 16:])) == {0, 1} and (contacts == contacts.T).all()


def test_missing_mkdssp(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DsspError, match="install_tools.sh dssp"):
        chain_labels(STRUCTURES / "1A7G.cif.gz")
    assert run_main(structure_labels.main, [str(STRUCTURES / "1A7G.cif.gz"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: mkdssp not found on PATH")
