"""Protein chains from PDB or mmCIF files (plain or gzipped): sequence, Cβ coordinates, 8 Å contacts.

The contact map follows the ESM papers: Cβ coordinates (Cα for glycine), NaN where the atom is not in
the file, contact = Cβ-Cβ distance < 8 Å, and unresolved residues are never supervised. The chain's
sequence is its SEQRES (PDB) / ``_pdbx_poly_seq_scheme`` (mmCIF) when the file has one, else the
observed residues; observed residues are placed on that sequence by global alignment, so residues
missing from the model (disordered loops, termini) stay in the sequence with NaN coordinates.
Only the first model of a multi-model (NMR) file is read.
"""

from __future__ import annotations

import gzip
import io
from collections import Counter
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from Bio.Align import PairwiseAligner
from Bio.Data.PDBData import protein_letters_3to1, protein_letters_3to1_extended
from Bio.PDB import MMCIFParser, PDBParser
from Bio.PDB.MMCIF2Dict import MMCIF2Dict

from fairseq_esm.errors import InputError

CONTACT_CUTOFF = 8.0  # Å between Cβ atoms (Cα for glycine)
MAX_TIES = 64  # equally scored alignments compared on residue numbering


class StructureError(InputError):
    """A file that is not a readable structure, or a chain that is not there."""


@dataclass(frozen=True)
class ChainStructure:
    """One protein chain: its sequence and a Cβ coordinate per residue (NaN when unresolved)."""

    name: str  # "<file stem>_<chain>"
    source: str
    chain_id: str
    sequence: str
    coords: np.ndarray  # (L, 3)
    observed: str  # one-letter codes of the residues with atoms, in file order
    observed_coords: np.ndarray  # (M, 3)
    observed_numbers: np.ndarray  # (M,) residue numbers in the file (author numbering)
    nonstandard: Counter  # modified amino acids written as X, by three-letter code
    skipped: Counter  # polymer entries that are not amino acids (caps like NH2), by code
    unplaced: int = 0  # observed residues the alignment could not put on the sequence

    @property
    def resolved(self) -> np.ndarray:
        """(L,) True where the residue's Cβ (Cα for glycine) is in the file."""
        return ~np.isnan(self.coords).any(axis=1)

    def distances(self) -> np.ndarray:
        """(L, L) Cβ-Cβ distances in Å, NaN for unresolved residues."""
        return np.linalg.norm(self.coords[:, None, :] - self.coords[None, :, :], axis=-1)

    def contacts(self, cutoff: float = CONTACT_CUTOFF) -> np.ndarray:
        """(L, L) bool, distance < cutoff; always False where a residue is unresolved (see ``resolved``)."""
        with np.errstate(invalid="ignore"):
            return self.distances() < cutoff

    def aligned_to(self, sequence: str) -> ChainStructure:
        """The same atoms placed on another sequence (a user's FASTA, a construct with tags)."""
        coords, unplaced = place_observed(sequence, self.observed, self.observed_coords, self.observed_numbers)
        return replace(self, sequence=sequence, coords=coords, unplaced=unplaced)

    def summary(self) -> str:
        """One line: name, length, resolved residues, and everything mapped or dropped."""
        parts = [f"{self.name}: {len(self.sequence)} residues, {int(self.resolved.sum())} with Cβ/Cα"]
        if self.nonstandard:
            parts.append("non-standard -> X: " + ", ".join(f"{k} {v}" for k, v in sorted(self.nonstandard.items())))
        if self.skipped:
            parts.append("not amino acids, left out: " + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())))
        if self.unplaced:
            parts.append(f"{self.unplaced} observed residues not placed on the sequence (masked)")
        return "; ".join(parts)


def is_amino_acid(name: str) -> bool:
    """Standard or known modified amino acid (Biopython's table) or UNK."""
    return name in protein_letters_3to1_extended or name == "UNK"


def one_letter(names: list[str]) -> tuple[str, Counter, Counter]:
    """Three-letter codes -> (one-letter string, non-standard counts, skipped non-amino-acid counts)."""
    letters, nonstandard, skipped = [], Counter(), Counter()
    for name in names:
        if name in protein_letters_3to1:
            letters.append(protein_letters_3to1[name])
        elif is_amino_acid(name):
            letters.append("X")
            nonstandard[name] += 1
        else:
            skipped[name] += 1
    return "".join(letters), nonstandard, skipped


def _aligner() -> PairwiseAligner:
    """Observed residues (query) onto the full sequence (target): missing stretches cost one opening,
    mismatches and residues absent from the sequence are expensive."""
    return PairwiseAligner(
        mode="global", match_score=2.0, mismatch_score=-3.0,
        open_internal_deletion_score=-3.0, extend_internal_deletion_score=0.0, end_deletion_score=0.0,
        open_insertion_score=-6.0, extend_insertion_score=-2.0,
    )


def _targets(alignment, length: int) -> np.ndarray:
    """(M,) index in the sequence of each observed residue, -1 where it aligned to a gap."""
    target_of = np.full(length, -1)
    for (t0, t1), (q0, q1) in zip(*alignment.aligned):
        target_of[q0:q1] = np.arange(t0, t1)
    return target_of


def _numbering_agreement(target_of: np.ndarray, numbers: np.ndarray) -> int:
    """Consecutive observed residues whose distance on the sequence equals their residue-number step."""
    both = (target_of[:-1] >= 0) & (target_of[1:] >= 0)
    return int((both & (np.diff(target_of) == np.diff(numbers))).sum())


def place_observed(sequence: str, observed: str, observed_coords: np.ndarray, numbers: np.ndarray
                   ) -> tuple[np.ndarray, int]:
    """(L, 3) coordinates on ``sequence`` (NaN where nothing aligned) and the number of observed residues
    left unplaced (aligned to a gap or to another amino acid). Among equally good alignments (a residue
    that could sit either side of a missing loop) the one that agrees with the residue numbering wins."""
    coords = np.full((len(sequence), 3), np.nan)
    if sequence == observed:
        return observed_coords.copy(), 0
    if not sequence or not observed:
        return coords, len(observed)
    candidates = [_targets(a, len(observed)) for a in islice(_aligner().align(sequence, observed), MAX_TIES)]
    target_of = max(candidates, key=lambda t: _numbering_agreement(t, numbers))
    same = np.array([t >= 0 and sequence[t] == letter for t, letter in zip(target_of, observed)])
    coords[target_of[same]] = observed_coords[same]
    return coords, int((~same).sum())


def _read_text(path: Path) -> str:
    """File text; gzip recognised by its magic bytes, not the name."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise StructureError(f"{path}: truncated or corrupt gzip ({err}) — download the file again") from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise StructureError(f"{path}: not a text PDB/mmCIF file — expected .pdb, .cif or their .gz") from err


def _is_mmcif(text: str) -> bool:
    """mmCIF starts with a ``data_`` block (after comments); PDB with record names."""
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            return line.startswith("data_")
    return False


def seqres_table(text: str, mmcif: bool) -> dict[str, list[str]]:
    """Every chain's full polymer sequence as three-letter codes (SEQRES / ``_pdbx_poly_seq_scheme``), from
    one pass over the file; chains without one are absent."""
    table: dict[str, list[str]] = {}
    if mmcif:
        scheme = MMCIF2Dict(io.StringIO(text))
        chains, names = scheme.get("_pdbx_poly_seq_scheme.pdb_strand_id"), scheme.get("_pdbx_poly_seq_scheme.mon_id")
        positions = scheme.get("_pdbx_poly_seq_scheme.seq_id")
        seen: set[tuple[str, str]] = set()  # microheterogeneity: several monomers at one seq_id, keep the first
        for chain, name, position in zip(chains or (), names or (), positions or ()):
            if (chain, position) not in seen:
                seen.add((chain, position))
                table.setdefault(chain, []).append(name)
        return table
    for line in text.splitlines():
        if line.startswith("SEQRES") and line[19:].split():
            table.setdefault(line[11:12], []).extend(line[19:].split())
    return table


def _seqres_names(text: str, mmcif: bool, chain_id: str) -> list[str] | None:
    """The chain's full polymer sequence as three-letter codes, or None when the file has none."""
    return seqres_table(text, mmcif).get(chain_id)


def _parse(path: Path, text: str, mmcif: bool):
    """First model of the structure, via Biopython."""
    parser = MMCIFParser(QUIET=True) if mmcif else PDBParser(QUIET=True)
    try:
        models = list(parser.get_structure(path.stem, io.StringIO(text)))
    except Exception as err:  # Biopython raises ValueError, KeyError, IndexError on malformed files
        raise StructureError(f"{path}: not a readable {'mmCIF' if mmcif else 'PDB'} file ({type(err).__name__}: "
                             f"{err}) — expected a PDB or mmCIF structure") from err
    if not models:
        raise StructureError(f"{path}: no atoms — expected a PDB or mmCIF structure")
    return models[0]


def _amino_acids(chain) -> list:
    return [residue for residue in chain if is_amino_acid(residue.get_resname())]


def pick_chain(path: Path, model, chain_id: str | None):
    """The requested chain, or the first chain with amino acids."""
    protein = [chain for chain in model if _amino_acids(chain)]
    names = ", ".join(repr(chain.id) for chain in protein) or "none"
    if chain_id is None:
        if not protein:
            raise StructureError(f"{path}: no protein chain (no amino-acid residues) — is this a nucleic-acid file?")
        return protein[0]
    for chain in protein:
        if chain.id == chain_id:
            return chain
    raise StructureError(f"{path}: no protein chain {chain_id!r}; protein chains: {names} — pick one with --chain")


def _cb_coord(residue) -> np.ndarray:
    """Cβ (Cα for glycine) coordinates, NaN when that atom is missing."""
    atom = "CA" if residue.get_resname() == "GLY" else "CB"
    return residue[atom].coord.astype(np.float64) if atom in residue else np.full(3, np.nan)


def read_model(path: Path) -> tuple[str, bool, Any]:
    """The file's text, whether it is mmCIF, and its first model (Biopython), parsed once."""
    text = _read_text(path)
    mmcif = _is_mmcif(text)
    return text, mmcif, _parse(path, text, mmcif)


def load_chain(path: str | Path, chain_id: str | None = None) -> ChainStructure:
    """Read one protein chain (``chain_id`` or the first protein chain) of a PDB/mmCIF file."""
    path = Path(path)
    text, mmcif, model = read_model(path)
    return chain_structure(path, text, mmcif, pick_chain(path, model, chain_id))


def chain_structure(path: Path, text: str, mmcif: bool, chain,
                    seqres: dict[str, list[str]] | None = None) -> ChainStructure:
    """A parsed chain on its full (SEQRES / poly_seq) sequence, with its Cβ coordinates placed; ``seqres`` is
    the file's :func:`seqres_table` when the caller has it (several chains of one file), else it is read."""
    residues = _amino_acids(chain)
    observed, nonstandard, skipped = one_letter([r.get_resname() for r in residues])
    observed_coords = np.stack([_cb_coord(r) for r in residues])
    numbers = np.array([r.id[1] for r in residues])
    reference = _seqres_names(text, mmcif, chain.id) if seqres is None else seqres.get(chain.id)
    sequence = observed
    if reference is not None:
        sequence, nonstandard, skipped = one_letter(reference)
    coords, unplaced = place_observed(sequence, observed, observed_coords, numbers)
    stem = path.name.split(".")[0]
    named = not chain.id.strip() or stem.endswith(f"_{chain.id}")  # "d1cih__", "1a5z_A" already say it
    return ChainStructure(
        name=stem if named else f"{stem}_{chain.id}", source=str(path), chain_id=chain.id,
        sequence=sequence, coords=coords, observed=observed, observed_coords=observed_coords, observed_numbers=numbers,
        nonstandard=nonstandard, skipped=skipped, unplaced=unplaced,
    )


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``file`` or ``file:CHAIN`` (command lines) -> (path, chain or None)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and 0 < len(tail) <= 4 and tail.isalnum() and not Path(spec).exists():
        return head, tail
    return spec, None
