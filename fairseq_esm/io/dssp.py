"""Secondary structure (DSSP, 8 and 3 states) of a protein chain, placed on the chain's full sequence.

``mkdssp`` (Debian ``dssp``, 4.x) runs on the first model of the file as read by ``structures.py``,
written back as a plain PDB file with a HEADER line and amino-acid residues only: mkdssp 4 refuses
PDB files without HEADER, mmCIF files without sequence tables, and some DNA complexes, so one
normalised input works for all. Other protein chains stay in (β-sheets between chains count);
when a chain ID does not fit the PDB format (blank or longer than one character) the chain is run
alone. :func:`file_labels` reads a file once and runs mkdssp once for all its requested chains (once per
requested chain only in that case: running them together would change their labels). DSSP's blank
state (loop/irregular) is written ``C``, and so is DSSP 4's ``P`` (polyproline II, not one of the
classic 8 states the ESM papers use); residues without a DSSP assignment (unresolved, or not placed on
the sequence) are ``.`` and must never be supervised.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from Bio.PDB import PDBIO, Select
from Bio.PDB.PDBExceptions import PDBIOException

from fairseq_esm.io.structures import (
    ChainStructure,
    StructureError,
    chain_structure,
    is_amino_acid,
    pick_chain,
    place_observed,
    read_model,
    seqres_table,
)

SS8 = "HGIEBTSC"  # DSSP states; C = DSSP's blank (loop)
MASKED = "."
TO_SS3 = str.maketrans({"G": "H", "I": "H", "B": "E", "T": "C", "S": "C"})
INSTALL_HINT = "bash preprocess/install_tools.sh dssp"


class DsspError(StructureError):
    """mkdssp missing or failing on a file."""


@dataclass(frozen=True)
class ChainLabels:
    """A chain with its secondary structure: ``ss8[i]`` labels ``chain.sequence[i]`` (``.`` = masked)."""

    chain: ChainStructure
    ss8: str
    unassigned: int  # observed residues DSSP gave no state (e.g. missing backbone atoms)

    @property
    def ss3(self) -> str:
        """The 3-state reduction: H,G,I -> H; E,B -> E; the rest -> C; ``.`` stays masked."""
        return to_ss3(self.ss8)

    @property
    def labelled(self) -> np.ndarray:
        """(L,) True where the residue has a DSSP state."""
        return np.array([c != MASKED for c in self.ss8], dtype=bool)


def to_ss3(ss8: str) -> str:
    """8-state string -> 3-state string (H,G,I -> H; E,B -> E; T,S,C -> C), masks kept."""
    return ss8.translate(TO_SS3)


def mkdssp_path() -> str:
    """The mkdssp executable, or a one-line error saying how to install it."""
    found = shutil.which("mkdssp")
    if found is None:
        raise DsspError(f"mkdssp not found on PATH — install it with `{INSTALL_HINT}` (Debian package dssp)")
    return found


class _AminoAcids(Select):
    """PDBIO filter: amino-acid residues of the chosen chains."""

    def __init__(self, chains: set[str]):
        self.chains = chains

    def accept_chain(self, chain) -> bool:
        return chain.id in self.chains

    def accept_residue(self, residue) -> bool:
        return is_amino_acid(residue.get_resname())


def _protein_ids(model) -> set[str]:
    """IDs of the model's chains with at least one amino acid."""
    return {c.id for c in model if any(is_amino_acid(r.get_resname()) for r in c)}


def _fits_pdb(protein: set[str]) -> bool:
    """Every protein chain ID is one non-blank character, so the whole model can be written as PDB."""
    return all(len(c) == 1 and c.strip() for c in protein)


def _save(entity, protein: set[str], out: Path) -> None:
    """Amino acids of the ``protein`` chains of a structure, model or chain as the PDB file mkdssp reads (HEADER
    first)."""
    writer = PDBIO()
    writer.set_structure(entity)
    buffer = io.StringIO()
    writer.save(buffer, select=_AminoAcids(protein))
    atoms = re.sub(r"^HETATM", "ATOM  ", buffer.getvalue(), flags=re.M)  # modified amino acids (MSE) too
    out.write_text("HEADER    PROTEIN CHAIN FOR DSSP\n" + atoms)


def _alone(chain):
    """A copy of ``chain`` renamed ``A``, detached from its model (to be run through mkdssp by itself)."""
    alone = chain.copy()
    alone.detach_parent()
    alone.id = "A"
    return alone


def _write_input(model, chain, out: Path) -> str:
    """First model as a PDB file mkdssp reads; returns the chain's ID in that file."""
    protein = _protein_ids(model)
    if _fits_pdb(protein):
        _save(model, protein, out)
        return chain.id
    # the PDB format has one character for the chain: run this chain alone, renamed
    _save(_alone(chain), {"A"}, out)
    return "A"


def parse_dssp(text: str) -> dict[str, list[tuple[int, str, str, str]]]:
    """Classic DSSP output -> chain -> [(residue number, insertion code, amino acid, 8-state)] in order."""
    records: dict[str, list] = defaultdict(list)
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("  #  RESIDUE"):
            break
    for line in lines:
        if len(line) < 17 or line[13] == "!":  # chain break marker
            continue
        state = line[16] if line[16] in SS8 else "C"  # blank (loop) and DSSP 4's P (PPII) -> C
        records[line[11]].append((int(line[5:10]), line[10].strip(), line[13], state))
    return records


def run_mkdssp(pdb: Path) -> str:
    """Classic-format DSSP text for a PDB file; mkdssp's failure as a one-line error."""
    result = subprocess.run([mkdssp_path(), "--output-format", "dssp", str(pdb), "/dev/stdout"],
                            capture_output=True, text=True)
    if result.returncode != 0 or "  #  RESIDUE" not in result.stdout:
        lines = [s.strip() for s in result.stderr.splitlines() if s.strip()] or ["no output"]
        raise DsspError(f"mkdssp failed (exit {result.returncode}): {lines[0]}")
    return result.stdout


def _states(chain: ChainStructure, records: list[tuple[int, str, str, str]]) -> tuple[list[str | None], int]:
    """8-state per observed residue (None where DSSP has none), matched by residue number in file order."""
    by_number: dict[int, list[str]] = defaultdict(list)
    for number, _, _, state in records:
        by_number[number].append(state)
    states = [by_number[int(n)].pop(0) if by_number[int(n)] else None for n in chain.observed_numbers]
    return states, sum(s is None for s in states)


def place_states(chain: ChainStructure, states: list[str | None]) -> str:
    """Observed residues' states on the full sequence, ``.`` where nothing was placed or assigned."""
    index = np.repeat(np.arange(len(chain.observed), dtype=float)[:, None], 3, axis=1)
    placed, _ = place_observed(chain.sequence, chain.observed, index, chain.observed_numbers)
    labels = [MASKED] * len(chain.sequence)
    for position, source in enumerate(placed[:, 0]):
        if not np.isnan(source) and states[int(source)] is not None:
            labels[position] = states[int(source)]
    return "".join(labels)


def _labels(path: Path, chain: ChainStructure, records: list | None) -> ChainLabels:
    """A chain's states from its DSSP records (an error when DSSP assigned none of its residues)."""
    if not records:
        raise DsspError(f"{path}: mkdssp assigned no residue of chain {chain.chain_id!r}")
    states, unassigned = _states(chain, records)
    return ChainLabels(chain=chain, ss8=place_states(chain, states), unassigned=unassigned)


def _chain_labels_per_chain(path: str | Path, chain_id: str | None = None) -> ChainLabels:
    """Reference: one chain, the file read and mkdssp run for this chain alone (the pre-``file_labels`` path,
    kept for tests and benchmarks/structure_labels_speed.py)."""
    path = Path(path)
    text, mmcif, model = read_model(path)
    parsed = pick_chain(path, model, chain_id)
    chain = chain_structure(path, text, mmcif, parsed)
    with tempfile.TemporaryDirectory(prefix="dssp_") as tmp:
        pdb = Path(tmp) / "input.pdb"
        written = _write_input(model, parsed, pdb)
        records = parse_dssp(run_mkdssp(pdb)).get(written)
    return _labels(path, chain, records)


def _dssp_runs(model, parsed: list) -> list[tuple[object, set[str], dict[str, str]]]:
    """What mkdssp must run on for these chains: (what to write: structure, model or lone chain; the chains
    written; {chain ID: its ID in that file}). One run for the whole model when every protein chain ID fits the
    PDB format, else one per chain."""
    protein = _protein_ids(model)
    if _fits_pdb(protein):
        structure = model.get_parent()  # the same PDB text, without the copy PDBIO makes of a model
        whole = structure if structure is not None and len(structure) == 1 else model
        return [(whole, protein, {chain.id: chain.id for chain in parsed})]
    distinct = {chain.id: chain for chain in parsed}
    return [(_alone(chain), {"A"}, {chain.id: "A"}) for chain in distinct.values()]


def _run(path: Path, entity, protein: set[str], pdb: Path) -> dict[str, list[tuple[int, str, str, str]]]:
    """mkdssp on ``entity`` written to ``pdb``: the parsed records by chain."""
    try:
        _save(entity, protein, pdb)
    except PDBIOException as err:  # residue numbers above 9999 (large mmCIF files)
        raise DsspError(f"{path}: does not fit the PDB format mkdssp is given ({err})") from err
    return parse_dssp(run_mkdssp(pdb))


def file_labels(path: str | Path, chain_ids: Sequence[str | None]) -> list[ChainLabels | StructureError]:
    """DSSP labels of several chains of one file (``None`` = the first protein chain), the file read once and
    mkdssp run once on it: one result per request, in order, a chain that cannot be labelled giving its error
    (the same labels and errors as :func:`chain_labels` per chain)."""
    path = Path(path)
    try:
        text, mmcif, model = read_model(path)
    except StructureError as err:
        return [err] * len(chain_ids)
    results: list = []
    seqres = seqres_table(text, mmcif)
    for chain_id in chain_ids:
        try:
            parsed = pick_chain(path, model, chain_id)
            results.append((parsed, chain_structure(path, text, mmcif, parsed, seqres)))
        except StructureError as err:
            results.append(err)
    parsed = [r[0] for r in results if isinstance(r, tuple)]
    records: dict[str, list | DsspError] = {}
    with tempfile.TemporaryDirectory(prefix="dssp_") as tmp:
        for entity, protein, written in _dssp_runs(model, parsed) if parsed else []:
            try:
                by_chain = _run(path, entity, protein, Path(tmp) / "input.pdb")
            except DsspError as err:  # every chain of this run is skipped, the file's other runs still count
                records.update((chain_id, err) for chain_id in written)
                continue
            records.update((chain_id, by_chain.get(name)) for chain_id, name in written.items())
    labels: list[ChainLabels | StructureError] = []
    for result in results:
        if not isinstance(result, tuple):
            labels.append(result)
            continue
        found = records[result[0].id]
        try:
            labels.append(found if isinstance(found, DsspError) else _labels(path, result[1], found))
        except DsspError as err:
            labels.append(err)
    return labels


def chain_labels(path: str | Path, chain_id: str | None = None) -> ChainLabels:
    """DSSP 8-state labels of one chain (``chain_id`` or the first protein chain), on its full sequence."""
    (result,) = file_labels(path, [chain_id])
    if isinstance(result, StructureError):
        raise result
    return result
