"""Backbone-only JSON (GVP's TS50 format) to PDB: DSSP and Cβ contacts work on what it writes."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from Bio.PDB import PDBParser

from fairseq_esm.io.dssp import chain_labels
from fairseq_esm.io.structures import load_chain

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "preprocess" / "backbone_json_to_pdb.py"
STRUCTURE = ROOT / "examples" / "data" / "structures" / "1LCD.pdb.gz"


def backbone_entry(chain_id: str = "A") -> tuple[dict, object]:
    """A real chain (1LCD:A, lac repressor headpiece) in the GVP JSON layout: name, seq, N/CA/C/O."""
    chain = load_chain(STRUCTURE, chain_id)
    with gzip.open(STRUCTURE, "rt") as handle:
        model = PDBParser(QUIET=True).get_structure("x", handle)[0]
    residues = [r for r in model[chain_id] if r.id[0] == " "]
    coords = [[r[a].coord.tolist() for a in ("N", "CA", "C", "O")] for r in residues]
    seq = "".join(chain.sequence[i] for i in np.flatnonzero(chain.resolved))
    return {"name": "1LCD_A_backbone", "seq": seq, "coords": coords}, chain


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


@pytest.mark.skipif(not STRUCTURE.exists(), reason="shipped structure missing")
def test_backbone_pdb_gives_the_same_dssp_and_near_same_contacts(tmp_path):
    entry, chain = backbone_entry()
    assert len(entry["seq"]) == len(entry["coords"])
    source = tmp_path / "set.json"
    source.write_text(json.dumps([entry]))
    proc = run(str(source), "--out", str(tmp_path / "pdb"))
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "pdb" / "1LCD_A_backbone.pdb"
    full, backbone = chain_labels(STRUCTURE, "A"), chain_labels(written, "A")
    resolved = "".join(s for s, ok in zip(full.ss8, chain.resolved) if ok)
    assert backbone.ss8 == resolved  # DSSP reads only the backbone: identical states
    real = chain.contacts()[np.ix_(chain.resolved, chain.resolved)]
    virtual = backbone.chain.contacts()
    assert (real == virtual).mean() > 0.97  # virtual Cβ within a few tenths of an Å of the real one


def test_bad_json_is_one_line(tmp_path):
    source = tmp_path / "bad.json"
    source.write_text(json.dumps([{"name": "x", "seq": "AC", "coords": [[[0, 0, 0]] * 4]}]))
    proc = run(str(source), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {source}: entry 0 needs name, seq and coords of shape (len(seq), 4, 3)"
