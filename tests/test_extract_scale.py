"""fairseq-esm-extract at scale: the FASTA is streamed in --sort-window groups (outputs as one whole-file run's),
and --shard I/N processes writing into one directory together write exactly what one unsharded run writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.proteins import write_fasta

from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.extract import main
from fairseq_esm.inference.output import INDEX, read_shards

#: ids that collide as file names across shards (case, numbered names, repeats), so names must not depend on
#: which shard writes first: unsharded, ABC is ABC.2.pt, the id abc.2 is abc.2.2.pt, the second dup dup.2.pt
IDS = ["abc", "ABC", "dup", "dup", "abc.2", "dup", "a/b", "a_b"]
COMMON = ["--include", "mean", "per_tok", "bos", "contacts", "--repr-layers", 0, -1, "--threads", 1, "--no-progress"]


def extract(*argv: object) -> int:
    return run_main(main, [str(a) for a in argv])


def records(sample_proteins: list[str], count: int = 23) -> list[tuple[str, str]]:
    """``count`` real proteins, one of them longer than the tiny models' context (windowed), named ``IDS`` then
    ``p<i>``."""
    short = [p for p in sample_proteins if len(p) <= 120][: count - 1]
    long = next(p for p in sample_proteins if 280 <= len(p) <= 400)
    seqs = short[:5] + [long] + short[5:]
    return [(IDS[i] if i < len(IDS) else f"p{i}", seq) for i, seq in enumerate(seqs)]


def index_lines(out: Path) -> list[str]:
    """The index's lines, header first, then the rows sorted (rows are appended as outputs finish)."""
    header, *rows = (out / INDEX).read_text().splitlines()
    return [header, *sorted(rows)]


def assert_same_pt_outputs(got: Path, expected: Path, exact: bool) -> None:
    """The same index rows, the same files, and in each the same tensors (bit for bit when ``exact``)."""
    assert index_lines(got) == index_lines(expected)
    names = sorted(p.name for p in expected.glob("*.pt"))
    assert sorted(p.name for p in got.glob("*.pt")) == names and len(names) == len(index_lines(expected)) - 1
    for name in names:
        assert_same_result(torch.load(got / name), torch.load(expected / name), exact)


def assert_same_result(ours: dict, theirs: dict, exact: bool) -> None:
    assert ours.keys() == theirs.keys() and ours["label"] == theirs["label"]
    for key, value in theirs.items():
        if key == "label":
            continue
        pairs = [(ours[key][k], v) for k, v in value.items()] if isinstance(value, dict) else [(ours[key], value)]
        for a, b in pairs:
            if exact:
                assert torch.equal(a.nan_to_num(), b.nan_to_num()) and torch.equal(a.isnan(), b.isnan()), key
            else:
                assert torch.allclose(a, b, atol=1e-5, equal_nan=True), key


def test_sharded_runs_write_what_one_run_writes(official_checkpoint, sample_proteins, tmp_path):
    """--max-tokens 1 (one protein per forward pass) makes every output independent of batching, so the shards'
    files equal the unsharded run's bit for bit: in either order one after the other, and concurrently."""
    fasta = write_fasta(tmp_path / "in.fasta", records(sample_proteins))
    checkpoint = official_checkpoint("esm1b")
    args = [checkpoint, fasta, *COMMON, "--max-tokens", 1]
    assert extract(*args, "--out", tmp_path / "one") == 0
    names = {line.split("\t")[0]: line.split("\t")[1] for line in index_lines(tmp_path / "one")[1:]
             if line.split("\t")[2] == "1"}
    assert names["ABC"] == "ABC.2.pt" and names["abc.2"] == "abc.2.2.pt" and names["a_b"] == "a_b.2.pt"
    for order in ([1, 0], [0, 1]):  # one shard entirely ahead of the other
        out = tmp_path / f"order{order[0]}"
        for shard in order:
            assert extract(*args, "--out", out, "--shard", f"{shard}/2", "--sort-window", 3) == 0
        assert_same_pt_outputs(out, tmp_path / "one", exact=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "fairseq_esm.cli.extract", *map(str, args), "--out",
                               str(tmp_path / "together"), "--shard", f"{shard}/2", "--sort-window", "4"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for shard in (0, 1)]
    for shard, proc in enumerate(procs):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert f"wrote {12 - shard} protein(s)" in err and f"shard {shard}/2:" in err and "of the 23 kept" in err
    assert_same_pt_outputs(tmp_path / "together", tmp_path / "one", exact=True)
    assert not list((tmp_path / "together").glob("*.tmp"))


def test_sharded_npz_shards_hold_what_one_run_holds(official_checkpoint, sample_proteins, tmp_path, capsys):
    """npz shards: which proteins share a shard depends on the processes, the proteins and index rows do not."""
    fasta = write_fasta(tmp_path / "in.fasta", records(sample_proteins))
    args = [official_checkpoint("esm1b"), fasta, *COMMON, "--format", "npz-shards", "--shard-size", 4]
    assert extract(*args, "--out", tmp_path / "one") == 0
    for shard in (2, 0, 1):
        assert extract(*args, "--out", tmp_path / "split", "--shard", f"{shard}/3", "--sort-window", 5) == 0
    assert "wrote 7 protein(s)" in capsys.readouterr().err  # shard 1/3: proteins 1, 4, ..., 19
    expected = {r["label"] + str(i): r for i, r in enumerate(sorted(read_shards(tmp_path / "one"), key=_order))}
    got = {r["label"] + str(i): r for i, r in enumerate(sorted(read_shards(tmp_path / "split"), key=_order))}
    assert got.keys() == expected.keys() and len(got) == 23
    for key, result in got.items():
        assert_same_result(result, expected[key], exact=False)

    def rows(out: Path) -> list[tuple[str, ...]]:  # without the shard and row columns
        return sorted(tuple(line.split("\t")[i] for i in (0, 1, 4, 5)) for line in index_lines(out)[1:])

    assert rows(tmp_path / "split") == rows(tmp_path / "one")


def _order(result: dict) -> tuple:
    """Results of one id (repeats) in a fixed order: by their contents."""
    return result["label"], result["mean_representations"][0].sum().item()


def test_sort_window_streams_without_changing_outputs(official_checkpoint, sample_proteins, tmp_path, capsys):
    """Groups of 2 or 5 proteins give the outputs of one whole-file group (within batching's rounding), the same
    names and index; resume works group by group; the report, long-protein line and summary count the file."""
    fasta = write_fasta(tmp_path / "in.fasta", records(sample_proteins))
    args = [official_checkpoint("esm1b"), fasta, *COMMON, "--max-tokens", 300]
    assert extract(*args, "--out", tmp_path / "whole") == 0
    capsys.readouterr()
    for window in (2, 5):
        assert extract(*args, "--out", tmp_path / f"w{window}", "--sort-window", window) == 0
        err = capsys.readouterr().err
        assert "records read 23, written 23" in err and "wrote 23 protein(s)" in err and "windowed 1" in err
        assert "1 protein(s) longer than 126 residues go in" in err
        assert_same_pt_outputs(tmp_path / f"w{window}", tmp_path / "whole", exact=False)
    out = tmp_path / "w2"
    victims = sorted(out.glob("*.pt"))[3:10:3]
    for victim in victims:
        victim.unlink()
    assert extract(*args, "--out", out, "--sort-window", 2) == 0
    err = capsys.readouterr().err
    assert "wrote 3 protein(s)" in err and "skipped 20 already there" in err
    assert_same_pt_outputs(out, tmp_path / "whole", exact=False)


@pytest.mark.parametrize("value", ["2/2", "1", "a/2", "-1/2", "0/0"])
def test_bad_shard_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["model.pt", "in.fasta", "--out", "out", "--shard", value])
    assert exit_info.value.code == 2
    assert "--shard" in capsys.readouterr().err
