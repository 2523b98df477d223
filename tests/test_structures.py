"""Structures -> sequence, Cβ coordinates and 8 Å contact maps, on the real PDB entries in
examples/data/structures/ (provenance in its README); coordinates are checked against the raw ATOM lines."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fairseq_esm.io.structures import StructureError, load_chain, parse_spec, place_observed

STRUCTURES = Path(__file__).resolve().parents[1] / "examples" / "data" / "structures"
ONE_LETTER = dict(zip("ALA ARG ASN ASP CYS GLN GLU GLY HIS ILE LEU LYS MET PHE PRO SER THR TRP TYR VAL".split(),
                      "ARNDCQEGHILKMFPSTWYV"))


def atom_lines(name: str, chain: str) -> dict[tuple[int, str], dict[str, np.ndarray]]:
    """(residue number, name) -> {atom: xyz} of the first model, read by column from a PDB file."""
    residues: dict = {}
    with gzip.open(STRUCTURES / name, "rt") as handle:
        for line in handle:
            if line.startswith("ENDMDL"):
                break
            if line.startswith(("ATOM", "HETATM")) and line[21] == chain and line[16] in " A":
                key = (int(line[22:26]), line[17:20].strip())
                xyz = np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])])
                residues.setdefault(key, {})[line[12:16].strip()] = xyz
    return residues


def test_pdb_contact_map_matches_atom_records() -> None:
    chain = load_chain(STRUCTURES / "1A8O.pdb.gz")
    residues = [v for k, v in atom_lines("1A8O.pdb.gz", "A").items() if "CA" in v]
    assert chain.chain_id == "A" and len(chain.sequence) == len(residues) == 70
    assert chain.sequence.count("X") == 4 and chain.nonstandard == {"MSE": 4}  # selenomethionine -> X, counted
    names = [k[1] for k, v in atom_lines("1A8O.pdb.gz", "A").items() if "CA" in v]
    expected = np.stack([atoms["CA" if name == "GLY" else "CB"] for name, atoms in zip(names, residues)])
    np.testing.assert_allclose(chain.coords, expected, atol=1e-3)
    contacts = chain.contacts()
    distance = np.linalg.norm(expected[:, None] - expected[None], axis=-1)
    assert contacts.shape == (70, 70) and (contacts == contacts.T).all() and contacts.diagonal().all()
    assert (contacts == (distance < 8.0)).all()
    assert 0.05 < contacts.mean() < 0.3  # a folded domain: some but not most pairs within 8 Å


def test_glycine_uses_calpha_others_cbeta() -> None:
    chain = load_chain(STRUCTURES / "1LCD.pdb.gz")
    atoms = atom_lines("1LCD.pdb.gz", "A")
    numbered = sorted(key for key in atoms if key[1] in ONE_LETTER)  # amino acids in residue order
    assert "".join(ONE_LETTER[name] for _, name in numbered) == chain.sequence
    glycines = [i for i, (number, name) in enumerate(numbered) if name == "GLY"]
    assert glycines and chain.sequence[glycines[0]] == "G"
    np.testing.assert_allclose(chain.coords[glycines[0]], atoms[numbered[glycines[0]]]["CA"], atol=1e-3)
    other = next(i for i, (_, name) in enumerate(numbered) if name != "GLY")
    np.testing.assert_allclose(chain.coords[other], atoms[numbered[other]]["CB"], atol=1e-3)
    assert not np.allclose(chain.coords[other], atoms[numbered[other]]["CA"], atol=0.5)


@pytest.mark.parametrize("entry", ["1A8O"])
def test_mmcif_and_pdb_of_one_entry_agree(entry: str) -> None:
    pdb, cif = load_chain(STRUCTURES / f"{entry}.pdb.gz"), load_chain(STRUCTURES / f"{entry}.cif.gz")
    assert pdb.sequence == cif.sequence and pdb.name == cif.name
    np.testing.assert_allclose(pdb.coords, cif.coords, atol=1e-3)
    assert (pdb.contacts() == cif.contacts()).all() and (pdb.resolved == cif.resolved).all()


def test_unresolved_residues_are_masked() -> None:
    chain = load_chain(STRUCTURES / "2BEG.pdb.gz")  # Aβ(1-42) fibril: residues 1-16 have no atoms
    assert chain.sequence == "DAEFRHDSGYEVHHQKLVFFAEDVGSNKGAIIGLMVGGVVIA"
    assert (~chain.resolved[:16]).all() and chain.resolved[16:].all()
    contacts = chain.contacts()
    assert not contacts[:16].any() and not contacts[:, :16].any()
    first_atoms = atom_lines("2BEG.pdb.gz", "A")[(17, "LEU")]
    np.testing.assert_allclose(chain.coords[16], first_atoms["CB"], atol=1e-3)


def test_missing_cbeta_masked_nonstandard_counted() -> None:
    chain = load_chain(STRUCTURES / "2n0n_M1.pdb.gz")  # AIB has CB1/CB2 but no CB; PH8 and NH2 not amino acids
    assert chain.sequence == "HXEGKFTSEF"
    assert chain.nonstandard == {"AIB": 1} and chain.skipped == {"PH8": 1, "NH2": 1}
    assert chain.resolved.tolist() == [True, False] + [True] * 8
    assert "AIB 1" in chain.summary() and "NH2 1" in chain.summary()


def test_default_chain_is_first_protein_chain_and_bad_chains_fail() -> None:
    assert load_chain(STRUCTURES / "1LCD.pdb.gz").chain_id == "A"  # chains B and C (DNA) come first
    with pytest.raises(StructureError, match="no protein chain 'B'; protein chains: 'A'"):
        load_chain(STRUCTURES / "1LCD.pdb.gz", "B")
    with pytest.raises(StructureError, match="no protein chain 'Z'"):
        load_chain(STRUCTURES / "1A8O.cif.gz", "Z")


def test_gzip_recognised_by_content_and_non_structures_refused(tmp_path: Path) -> None:
    renamed = tmp_path / "capsid.pdb"
    renamed.write_bytes((STRUCTURES / "1A8O.pdb.gz").read_bytes())
    assert load_chain(renamed).sequence == load_chain(STRUCTURES / "1A8O.pdb.gz").sequence
    fasta = tmp_path / "protein.fasta"
    fasta.write_text(">p\nMKTAYIAKQR\n")
    with pytest.raises(StructureError, match="protein.fasta"):
        load_chain(fasta)
    truncated = tmp_path / "cut.pdb.gz"
    truncated.write_bytes((STRUCTURES / "1A8O.pdb.gz").read_bytes()[:2000])
    with pytest.raises(StructureError, match="gzip"):
        load_chain(truncated)


def test_aligned_to_a_user_sequence() -> None:
    chain = load_chain(STRUCTURES / "2BEG.pdb.gz")
    mutant = "MHHHHHH" + chain.sequence[:20] + "W" + chain.sequence[21:]  # His tag, F21W
    moved = chain.aligned_to(mutant)
    np.testing.assert_array_equal(moved.coords[7 + 21:], chain.coords[21:])
    np.testing.assert_array_equal(moved.coords[7 + 16:7 + 20], chain.coords[16:20])
    assert (~moved.resolved[:7 + 16]).all() and not moved.resolved[7 + 20]  # the mutated residue is not placed
    assert moved.unplaced == 1 and moved.contacts().shape == (len(mutant), len(mutant))


def test_residue_numbering_breaks_alignment_ties() -> None:
    coords = np.arange(9.0).reshape(3, 3)
    # observed A, Q, P: Q fits before or after the missing GGGG stretch equally well by sequence alone
    before, _ = place_observed("AQGGGGQP", "AQP", coords, np.array([1, 2, 8]))
    after, _ = place_observed("AQGGGGQP", "AQP", coords, np.array([1, 7, 8]))
    assert np.isfinite(before[[0, 1, 7]]).all() and np.isnan(before[2:7]).all()
    assert np.isfinite(after[[0, 6, 7]]).all() and np.isnan(after[1:6]).all()


def test_parse_spec(tmp_path: Path) -> None:
    assert parse_spec("x/1LCD.pdb.gz:A") == ("x/1LCD.pdb.gz", "A")
    assert parse_spec("x/1LCD.pdb.gz") == ("x/1LCD.pdb.gz", None)
    odd = tmp_path / "model:1"
    odd.write_text("")
    assert parse_spec(str(odd)) == (str(odd), None)  # an existing file whose name has a colon
