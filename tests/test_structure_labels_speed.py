"""fairseq-esm-structure-labels runs mkdssp once per structure file: the same bytes as the per-chain reference
(one mkdssp run per requested chain), any number of worker processes, and a file mkdssp rejects is skipped."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from fairseq_esm.cli import structure_labels
from fairseq_esm.cli.common import run_main
from fairseq_esm.io import dssp
from fairseq_esm.io.structures import read_model, seqres_table

ROOT = Path(__file__).resolve().parents[1]
STRUCTURES = ROOT / "examples" / "data" / "structures"
BEG = STRUCTURES / "2BEG.pdb.gz"  # amyloid fibril: 5 protein chains, β-sheets between them


def outputs(out: Path) -> dict[str, bytes]:
    """Every file under ``out``, by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def count_mkdssp(monkeypatch) -> list[int]:
    """Count mkdssp runs in this process from now on."""
    calls, original = [0], dssp.run_mkdssp

    def counting(pdb: Path) -> str:
        calls[0] += 1
        return original(pdb)

    monkeypatch.setattr(dssp, "run_mkdssp", counting)
    return calls


def both_paths(specs: list[str], tmp_path: Path, monkeypatch) -> tuple[dict, dict, int, int]:
    """Outputs and mkdssp runs of the per-chain reference and of ``collect`` (1 worker), skipped lines compared."""
    calls = count_mkdssp(monkeypatch)
    old_chains, old_skipped = structure_labels._collect_per_chain(specs)
    old_calls = calls[0]
    new_chains, new_skipped = structure_labels.collect(specs, 1)
    assert new_skipped == old_skipped
    structure_labels.write(tmp_path / "old", old_chains)
    structure_labels.write(tmp_path / "new", new_chains)
    return outputs(tmp_path / "old"), outputs(tmp_path / "new"), old_calls, calls[0] - old_calls


def test_one_mkdssp_run_per_file_same_bytes(tmp_path: Path, monkeypatch) -> None:
    specs = [f"{BEG}:{c}" for c in "ABCDE"] + [str(STRUCTURES / "1A7G.cif.gz"), f"{STRUCTURES / '1LCD.pdb.gz'}:Q",
                                               f"{BEG}:C", str(STRUCTURES / "1A8O.cif.gz")]
    old, new, old_calls, new_calls = both_paths(specs, tmp_path, monkeypatch)
    assert (old_calls, new_calls) == (8, 3)  # 2BEG five times (+ the repeat), 1A7G, 1A8O; 1LCD has no chain Q
    assert len(old) == 2 + 7 and new == old  # labels.fasta, ss8.txt, 7 contact maps


def test_chain_ids_that_do_not_fit_pdb_still_run_alone(tmp_path: Path, monkeypatch) -> None:
    """A blank chain ID: every requested chain runs through mkdssp by itself, as before."""
    lines = gzip.decompress(BEG.read_bytes()).decode().splitlines(keepends=True)
    blank = [line[:21] + " " + line[22:] if line.startswith(("ATOM", "HETATM", "TER")) and line[21] == "E"
             else line[:11] + " " + line[12:] if line.startswith("SEQRES") and line[11] == "E" else line
             for line in lines]
    path = tmp_path / "2BEG_blank.pdb"
    path.write_text("".join(blank))
    old, new, old_calls, new_calls = both_paths([f"{path}:A", f"{path}:B", str(path)], tmp_path, monkeypatch)
    assert (old_calls, new_calls) == (3, 2) and new == old


def corrupt_pdb(tmp_path: Path) -> Path:
    """1LCD with one coordinate written ``nan``: Biopython reads it, mkdssp rejects the file."""
    lines = gzip.decompress((STRUCTURES / "1LCD.pdb.gz").read_bytes()).decode().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("ATOM") and line[12:16] == " CA ")
    lines[first] = lines[first][:30] + "     nan" + lines[first][38:]
    path = tmp_path / "corrupt.pdb"
    path.write_text("".join(lines))
    return path


def test_workers_same_output_and_rejected_file_skipped(tmp_path: Path, capsys) -> None:
    corrupt = corrupt_pdb(tmp_path)
    specs = [str(corrupt), f"{BEG}:B", f"{BEG}:A", str(STRUCTURES / "1A7G.cif.gz"), f"{BEG}:Z",
             str(tmp_path / "missing.pdb"), str(STRUCTURES / "1LCD.pdb.gz"), f"{corrupt}:A", str(STRUCTURES)]
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        assert run_main(structure_labels.main, specs + ["--out", str(out), "--threads", str(workers)]) == 0
        printed = capsys.readouterr()
        runs[workers] = outputs(out), printed.out.replace(str(out), "OUT"), printed.err
    assert runs[1] == runs[2]
    files, report, skipped = runs[1]
    assert "4 chains written, 5 skipped" in report and f"skipped {STRUCTURES}: [Errno 21]" in skipped
    assert f"skipped {corrupt}: mkdssp failed" in skipped and f"skipped {corrupt}:A: mkdssp failed" in skipped
    assert f"skipped {BEG}:Z: {BEG}: no protein chain 'Z'" in skipped and "missing.pdb: [Errno 2]" in skipped
    names = (tmp_path / "out1" / "labels.fasta").read_text().split()[0::2]
    assert names == [">2BEG_B", ">2BEG_A", ">1A7G_E", ">1LCD_A"]  # input order, whatever finished first


def test_residue_numbers_beyond_pdb_skip_the_file(tmp_path: Path) -> None:
    """An mmCIF file whose residue numbers do not fit the PDB file mkdssp is given: skipped, not a crash."""
    from Bio.PDB import MMCIFIO
    from Bio.PDB.MMCIF2Dict import MMCIF2Dict

    table = MMCIF2Dict(io.StringIO(gzip.decompress((STRUCTURES / "1A8O.cif.gz").read_bytes()).decode()))
    table["_atom_site.auth_seq_id"] = [str(int(n) + 10000) for n in table["_atom_site.auth_seq_id"]]
    writer, path = MMCIFIO(), tmp_path / "1A8O_renumbered.cif"
    writer.set_dict(table)
    writer.save(str(path))
    chains, skipped = structure_labels.collect([str(path), f"{BEG}:A"], 1)
    assert [c.chain.name for c in chains] == ["2BEG_A"]
    assert skipped == [f"skipped {path}: {path}: does not fit the PDB format mkdssp is given (Residue number "
                       "('10151') exceeds PDB format limit.)"]


def test_workers_flag_spellings() -> None:
    parser = structure_labels.build_parser()
    assert parser.parse_args(["a.pdb", "--out", "d", "--threads", "3"]).threads == 3
    assert parser.parse_args(["a.pdb", "--out", "d", "--workers", "3"]).threads == 3  # hidden alias
    assert parser.parse_args(["a.pdb", "--out", "d"]).threads is None  # every core


def old_seqres_names(text: str, mmcif: bool, chain_id: str) -> list[str] | None:
    """structures._seqres_names before seqres_table (one chain per call): the oracle."""
    from Bio.PDB.MMCIF2Dict import MMCIF2Dict

    if mmcif:
        table = MMCIF2Dict(io.StringIO(text))
        chains, names = table.get("_pdbx_poly_seq_scheme.pdb_strand_id"), table.get("_pdbx_poly_seq_scheme.mon_id")
        positions = table.get("_pdbx_poly_seq_scheme.seq_id")
        if not chains:
            return None
        seen, result = set(), []
        for chain, name, position in zip(chains, names, positions):
            if chain == chain_id and position not in seen:
                seen.add(position)
                result.append(name)
        return result or None
    result = [name for line in text.splitlines() if line.startswith("SEQRES") and line[11:12] == chain_id
              for name in line[19:].split()]
    return result or None


@pytest.mark.parametrize("name", ["2BEG.pdb.gz", "1A7G.cif.gz", "1A8O.cif.gz", "1A8O.pdb.gz", "6WQA.cif.gz",
                                  "2n0n_M1.pdb.gz"])
def test_seqres_table_matches_per_chain_lookup(name: str) -> None:
    text, mmcif, model = read_model(STRUCTURES / name)
    table = seqres_table(text, mmcif)
    for chain_id in [c.id for c in model] + ["Z"]:
        assert table.get(chain_id) == old_seqres_names(text, mmcif, chain_id), (name, chain_id)
