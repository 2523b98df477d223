"""fairseq-esm-extract: numerics against fair-esm's own extraction loop, batching invariance, resume,
windows and truncation of long proteins, safe file names, shards, one-line errors, the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import esm
import pytest
import torch
from esm.pretrained import load_model_and_alphabet_local
from helpers.proteins import write_fasta

from fairseq_esm.checkpoints import load_model
from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.extract import main
from fairseq_esm.inference.extract import ExtractSpec, ExtractStats, extract_representations, resolve_layers
from fairseq_esm.inference.output import read_shards
from fairseq_esm.io.file_names import file_stem
from fairseq_esm.modules.batching import windows

TOL = 1e-4





def short_records(proteins: list[str], count: int, max_len: int = 120) -> list[tuple[str, str]]:
    """Real proteins that fit the tiny models' context (128 positions), named like UniProt entries."""
    chosen = [p for p in proteins if len(p) <= max_len][:count]
    return [(f"sp|Q{i:05d}|PROT{i}", seq) for i, seq in enumerate(chosen)]


def extract(*argv: object) -> int:
    """Run the CLI as the console script does (errors become one line and exit status 2)."""
    return run_main(main, [str(a) for a in argv])


def load_pt(out_dir: Path) -> dict[str, dict]:
    """label -> saved dict, found through index.tsv (the only way to find a file whose id was not safe)."""
    rows = [line.split("\t") for line in (out_dir / "index.tsv").read_text().splitlines()[1:]]
    return {rid: torch.load(out_dir / name) for rid, name, *_ in rows}


def fair_esm_extract(checkpoint: Path, fasta: Path, layers: list[int], toks_per_batch: int) -> dict[str, dict]:
    """fair-esm's esm/scripts/extract.py loop: its dataset, batches, batch converter, slicing and keys
    (plus the attention maps of the same forward, cut to each protein's tokens)."""
    model, alphabet = load_model_and_alphabet_local(str(checkpoint))
    model.eval()
    dataset = esm.FastaBatchedDataset.from_file(fasta)
    convert = alphabet.get_batch_converter(1022)
    repr_layers = [(i + model.num_layers + 1) % (model.num_layers + 1) for i in layers]
    results = {}
    with torch.no_grad():
        for batch in dataset.get_batch_indices(toks_per_batch, extra_toks_per_seq=1):
            labels, strs, toks = convert([dataset[i] for i in batch])
            out = model(toks, repr_layers=repr_layers, return_contacts=True)
            reps = out["representations"]
            for i, label in enumerate(labels):
                n, t = min(1022, len(strs[i])), int(toks[i].ne(alphabet.padding_idx).sum())
                results[label] = {
                    "representations": {k: r[i, 1 : n + 1] for k, r in reps.items()},
                    "mean_representations": {k: r[i, 1 : n + 1].mean(0) for k, r in reps.items()},
                    "bos_representations": {k: r[i, 0] for k, r in reps.items()},
                    "contacts": out["contacts"][i, :n, :n],
                    "attentions": out["attentions"][i, :, :, :t, :t],
                }
    return results


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= TOL


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("variant", ["esm1b", "esm1"])
def test_matches_fair_esm_extract(variant, official_checkpoint, sample_proteins, tmp_path):
    checkpoint = official_checkpoint(variant)
    fasta = write_fasta(tmp_path / "in.fasta", short_records(sample_proteins, 24))
    layers = [0, -2, -1]
    assert extract(checkpoint, fasta, "--out", tmp_path / "out", "--repr-layers", *layers, "--max-tokens", 1000,
                   "--include", "mean", "per_tok", "bos", "contacts", "attentions") == 0
    ours = load_pt(tmp_path / "out")
    theirs = fair_esm_extract(checkpoint, fasta, layers, 1000)
    assert sorted(ours) == sorted(theirs) and len(ours) == 24
    for label, result in ours.items():
        assert result["label"] == label
        for key in ("representations", "mean_representations", "bos_representations"):
            assert sorted(result[key]) == [0, 2, 3]  # fair-esm's keys: negative layers resolved
            for layer, tensor in result[key].items():
                assert_close(tensor, theirs[label][key][layer])
        assert_close(result["contacts"], theirs[label]["contacts"])
        assert_close(result["attentions"], theirs[label]["attentions"])


def test_python_api_yields_plain_tensors_and_counts(official_checkpoint, sample_proteins):
    model, alphabet = load_model(official_checkpoint("esm1b"))
    records = [("short", sample_proteins[12]), ("long", sample_proteins[1])]  # 98 and 381 residues
    spec = ExtractSpec(layers=resolve_layers([-1], model.num_layers), include=frozenset({"mean", "per_tok"}))
    stats = ExtractStats()
    results = dict(extract_representations(model, alphabet, records, spec, stats))
    assert sorted(results) == [0, 1] and results[1]["label"] == "long"
    assert results[1]["representations"][3].shape == (381, 64)
    for result in results.values():  # not inference tensors: users may modify them in place
        result["representations"][3].add_(1.0)
        result["mean_representations"][3].mul_(2.0)
    assert (stats.sequences, stats.residues, stats.windowed, stats.truncated) == (2, 98 + 381, 1, 0)


def test_batch_size_does_not_change_results(official_checkpoint, sample_proteins, tmp_path):
    chosen = [seq for seq in sample_proteins if len(seq) <= 700][:24]  # 61 to 648 residues: most windowed
    records = [(f"p{i}", seq) for i, seq in enumerate(chosen)]
    fasta = write_fasta(tmp_path / "in.fasta", records)
    common = ["--repr-layers", "1", "-1", "--include", "mean", "per_tok", "bos", "contacts"]
    assert extract(official_checkpoint("esm1b"), fasta, "--out", tmp_path / "small", "--max-tokens", 128, *common) == 0
    assert extract(official_checkpoint("esm1b"), fasta, "--out", tmp_path / "large", "--max-tokens", 100_000,
                   *common) == 0
    small, large = load_pt(tmp_path / "small"), load_pt(tmp_path / "large")
    assert sorted(small) == sorted(large) == sorted(rid for rid, _ in records)
    for label in small:
        for key in ("representations", "mean_representations", "bos_representations"):
            for layer in (1, 3):
                assert torch.allclose(small[label][key][layer], large[label][key][layer], atol=1e-5)
        assert torch.allclose(small[label]["contacts"], large[label]["contacts"], atol=1e-5, equal_nan=True)


def test_resume_skips_written_and_regenerates_deleted(official_checkpoint, sample_proteins, tmp_path, capsys):
    fasta = write_fasta(tmp_path / "in.fasta", short_records(sample_proteins, 6))
    out, checkpoint = tmp_path / "out", official_checkpoint("esm1b")
    assert extract(checkpoint, fasta, "--out", out) == 0
    assert "wrote 6 protein(s)" in capsys.readouterr().err
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    assert len(stamps) == 6
    assert extract(checkpoint, fasta, "--out", out) == 0
    err = capsys.readouterr().err
    assert "wrote 0 protein(s)" in err and "skipped 6 already there" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")} == stamps
    victim = sorted(stamps)[2]
    (out / victim).unlink()
    assert extract(checkpoint, fasta, "--out", out) == 0
    err = capsys.readouterr().err
    assert "wrote 1 protein(s)" in err and "skipped 5 already there" in err
    now = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    assert now.keys() == stamps.keys()
    assert [name for name in now if now[name] != stamps[name]] == [victim]
    assert len((out / "index.tsv").read_text().splitlines()) == 1 + 6  # header + one line per protein


def covering(position: int, spans: list[tuple[int, int]]) -> list[int]:
    return [w for w, (s, e) in enumerate(spans) if s <= position < e]


@pytest.mark.parametrize("variant", ["esm1b", "esm1"])
def test_long_protein_windows_average_overlaps(variant, official_checkpoint, sample_proteins, tmp_path, capsys):
    checkpoint = official_checkpoint(variant)
    seq = next(p for p in sample_proteins if 280 <= len(p) <= 400)
    fasta = write_fasta(tmp_path / "in.fasta", [("long1", seq)])
    assert extract(checkpoint, fasta, "--out", tmp_path / "out", "--repr-layers", 0, -1, "--window-overlap", 40,
                   "--include", "mean", "per_tok", "bos", "contacts") == 0
    assert "windowed 1, truncated 0" in capsys.readouterr().err
    result = load_pt(tmp_path / "out")["long1"]
    model, alphabet = load_model(checkpoint)
    size = 128 - alphabet.num_specials_added
    spans = windows(len(seq), size, 40)
    assert len(spans) >= 3
    with torch.no_grad():
        direct = [model(alphabet.tokenize(seq[s:e])[None], repr_layers=[0, 3], return_contacts=True) for s, e in spans]
    for layer in (0, 3):
        per_tok = result["representations"][layer]
        assert per_tok.shape == (len(seq), 64)
        window_reps = [out["representations"][layer][0, 1 : 1 + e - s] for out, (s, e) in zip(direct, spans)]
        for position in range(len(seq)):
            ws = covering(position, spans)
            expected = torch.stack([window_reps[w][position - spans[w][0]] for w in ws]).mean(0)
            assert_close(per_tok[position], expected)
        assert_close(result["mean_representations"][layer], per_tok.mean(0))
        assert_close(result["bos_representations"][layer], direct[0]["representations"][layer][0, 0])
    contacts = result["contacts"]
    assert contacts.shape == (len(seq), len(seq))
    last = len(seq) - 1
    for i, j in [(0, 5), (10, 100), (spans[1][0] + 3, spans[1][0] + 20), (last, last - 50), (0, last)]:
        shared = [w for w in covering(i, spans) if w in covering(j, spans)]
        if not shared:
            assert torch.isnan(contacts[i, j])
            continue
        values = [direct[w]["contacts"][0, i - spans[w][0], j - spans[w][0]] for w in shared]
        assert abs(contacts[i, j].item() - torch.stack(values).mean().item()) <= TOL


def test_long_protein_truncated_with_warning(official_checkpoint, sample_proteins, tmp_path, capsys):
    checkpoint = official_checkpoint("esm1b")
    seq = next(p for p in sample_proteins if 280 <= len(p) <= 400)
    fasta = write_fasta(tmp_path / "in.fasta", [("long1", seq), ("short1", sample_proteins[12])])
    assert extract(checkpoint, fasta, "--out", tmp_path / "out", "--long", "truncate",
                   "--include", "per_tok", "mean") == 0
    err = capsys.readouterr().err
    assert "warning: 1 protein(s) longer than 126 residues are truncated" in err and "long1" in err
    assert "truncated 1" in err
    results = load_pt(tmp_path / "out")
    model, alphabet = load_model(checkpoint)
    with torch.no_grad():
        direct = model(alphabet.tokenize(seq[:126])[None], repr_layers=[3])["representations"][3][0, 1:-1]
    assert_close(results["long1"]["representations"][3], direct)
    assert_close(results["long1"]["mean_representations"][3], direct.mean(0))
    assert results["short1"]["representations"][3].shape == (len(sample_proteins[12]), 64)
    # fair-esm's esm-extract form: positional output directory, underscore flags, --nogpu (hidden, with a note)
    assert extract(checkpoint, fasta, tmp_path / "out100", "--truncation_seq_length", 100, "--include", "per_tok",
                   "--repr_layers", -1, "--toks_per_batch", 500, "--nogpu") == 0
    err = capsys.readouterr().err
    assert "truncated to their first 100" in err
    for old, new in [("OUTPUT_DIR", "--out"), ("--truncation_seq_length", "--truncation-seq-length"),
                     ("--repr_layers", "--repr-layers"), ("--toks_per_batch", "--max-tokens"), ("--nogpu", "--device")]:
        assert f"{old} is deprecated; use {new}" in err
    assert load_pt(tmp_path / "out100")["long1"]["representations"][3].shape == (100, 64)


def test_unsafe_and_duplicate_ids_get_safe_recorded_names(official_checkpoint, sample_proteins, tmp_path):
    ids = ["a/b", ".hidden", "x" * 300, "sp|P69905|HBA_HUMAN", "til~de", "..", "ok_id", "ok_id"]
    records = list(zip(ids, [p for p in sample_proteins if len(p) <= 120]))
    fasta = write_fasta(tmp_path / "in.fasta", records)
    out = tmp_path / "out"
    assert extract(official_checkpoint("esm1b"), fasta, "--out", out) == 0
    rows = [line.split("\t")[:2] for line in (out / "index.tsv").read_text().splitlines()]
    assert rows[0] == ["id", "file"]
    assert sorted(rid for rid, _ in rows[1:]) == sorted(ids)
    names = [name for _, name in rows[1:]]
    assert len(set(names)) == len(ids)  # the duplicate did not overwrite the first copy
    assert sorted(p.name for p in out.glob("*.pt")) == sorted(names)
    assert all(p.is_file() for p in out.iterdir())  # nothing escaped into a subdirectory or a parent
    for name in names:
        assert not name.startswith(".") and len(name.encode()) <= 255
        assert torch.load(out / name)["label"] == next(rid for rid, n in rows[1:] if n == name)
    named = {rid: name for rid, name in rows[1:] if rid != "ok_id"}
    assert named["sp|P69905|HBA_HUMAN"] == "sp_P69905_HBA_HUMAN.pt"  # the one rule of io/file_names
    assert named["a/b"] == file_stem("a/b") + ".pt" == "a_b.pt"  # deterministic mapping
    assert len(named["x" * 300]) < 120
    # duplicate id (--duplicates keep): the first record keeps the plain name, the second gets its own file
    model, alphabet = load_model(official_checkpoint("esm1b"))
    with torch.no_grad():
        firsts = [model(alphabet.tokenize(seq)[None], repr_layers=[3])["representations"][3][0, 1:-1].mean(0)
                  for rid, seq in records if rid == "ok_id"]
    second = next(name for rid, name in rows[1:] if rid == "ok_id" and name != "ok_id.pt")
    assert second == "ok_id.2.pt"
    assert_close(torch.load(out / "ok_id.pt")["mean_representations"][3], firsts[0])
    assert_close(torch.load(out / second)["mean_representations"][3], firsts[1])


def test_npz_shards_match_pt_and_resume(official_checkpoint, sample_proteins, tmp_path, capsys):
    records = [(f"p{i}", seq) for i, seq in enumerate(sample_proteins[:10])]
    fasta = write_fasta(tmp_path / "in.fasta", records)
    checkpoint, shards = official_checkpoint("esm1b"), tmp_path / "shards"
    common = ["--repr-layers", 0, -1, "--include", "mean", "per_tok", "bos", "contacts"]
    assert extract(checkpoint, fasta, "--out", tmp_path / "pt", *common) == 0
    assert extract(checkpoint, fasta, "--out", shards, *common, "--format", "npz-shards", "--shard-size", 4) == 0
    assert sorted(p.name for p in shards.glob("*.npz")) == ["shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]

    def same_as_pt() -> None:
        expected = load_pt(tmp_path / "pt")
        got = {r["label"]: r for r in read_shards(shards)}
        assert sorted(got) == sorted(expected)
        for label, result in got.items():
            for key in ("representations", "mean_representations", "bos_representations"):
                for layer in (0, 3):
                    assert torch.equal(result[key][layer], expected[label][key][layer])
            assert torch.equal(result["contacts"].isnan(), expected[label]["contacts"].isnan())
            assert torch.equal(result["contacts"].nan_to_num(), expected[label]["contacts"].nan_to_num())

    same_as_pt()
    capsys.readouterr()
    index = shards / "index.tsv"
    lines = index.read_text().splitlines()
    assert lines[0] == "id\tcopy\tshard\trow\tlength\tseq_sha1" and len(lines) == 11
    index.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:3])  # killed before indexing, mid-line
    assert extract(checkpoint, fasta, "--out", shards, *common, "--format", "npz-shards", "--shard-size", 4) == 0
    assert "wrote 0 protein(s)" in capsys.readouterr().err
    assert sorted(index.read_text().splitlines()[1:]) == sorted(lines[1:])
    (shards / "shard-00001.npz").unlink()
    assert extract(checkpoint, fasta, "--out", shards, *common, "--format", "npz-shards", "--shard-size", 4) == 0
    assert "wrote 4 protein(s)" in capsys.readouterr().err
    same_as_pt()


@pytest.mark.parametrize("case, needle", [
    ("missing_fasta", "nope.fasta"),
    ("missing_checkpoint", "nope.pt"),
    ("layer_too_high", "layer 4 does not exist"),
    ("layer_too_low", "layer -5 does not exist"),
    ("attentions_of_windowed", "--long truncate"),
    ("attentions_in_shards", "--format pt"),
    ("fp16_on_cpu", "--fp16 needs a GPU"),
    ("duplicate_error", "duplicate id"),
    ("other_settings", "other settings"),
    ("no_out", "pass --out"),
    ("two_outs", "give only --out"),
])
def test_errors_are_one_line_exit_2(case, needle, official_checkpoint, sample_proteins, tmp_path, capsys):
    checkpoint = official_checkpoint("esm1b")
    fasta = write_fasta(tmp_path / "in.fasta", [("a", sample_proteins[12]), ("b", sample_proteins[1]),
                                                ("a", sample_proteins[16])])
    out = tmp_path / "out"
    argv = {
        "missing_fasta": [checkpoint, tmp_path / "nope.fasta", "--out", out],
        "missing_checkpoint": [tmp_path / "nope.pt", fasta, "--out", out],
        "layer_too_high": [checkpoint, fasta, "--out", out, "--repr-layers", 0, 4],
        "layer_too_low": [checkpoint, fasta, "--out", out, "--repr-layers", -5],
        "attentions_of_windowed": [checkpoint, fasta, "--out", out, "--include", "attentions"],
        "attentions_in_shards": [checkpoint, fasta, "--out", out, "--include", "attentions", "--format", "npz-shards"],
        "fp16_on_cpu": [checkpoint, fasta, "--out", out, "--fp16", "--device", "cpu"],
        "duplicate_error": [checkpoint, fasta, "--out", out, "--duplicates", "error"],
        "other_settings": [checkpoint, fasta, "--out", out, "--repr-layers", 0],
        "no_out": [checkpoint, fasta],
        "two_outs": [checkpoint, fasta, out, "--out", out],
    }[case]
    if case == "other_settings":
        assert extract(checkpoint, fasta, "--out", out) == 0
        capsys.readouterr()
    assert extract(*argv) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and needle in errors[0], errors


def test_console_script_help():
    script = Path(sys.executable).parent / "fairseq-esm-extract"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: fairseq-esm-extract ")
    assert "--repr-layers" in proc.stdout and "--include" in proc.stdout and "--long" in proc.stdout
