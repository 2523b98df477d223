"""Linear SS8 / contact probes with SCOPe-level cross-validation, on the shipped real slice (examples/data/probes)."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from helpers.training import checkpoint, run

from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.probes import main
from fairseq_esm.data.contact_probe import write_data_dir
from fairseq_esm.evaluation.linear_probes import (
    ContactProbeConfig,
    contact_precision,
    cross_validate,
    onehot_features,
    ss8_targets,
)
from fairseq_esm.evaluation.remote_homology import parse_header
from fairseq_esm.evaluation.scope_folds import (
    LEVELS,
    FoldError,
    LabelledDomain,
    crop_domains,
    group_key,
    partition,
    read_assignments,
    read_labels,
    search_domains,
)
from fairseq_esm.io.dssp import SS8
from fairseq_esm.modules.bilinear_contact_probe import BilinearContactProbe

DATA = Path(__file__).resolve().parents[1] / "examples/data"
PROBES = DATA / "probes"
SCOPE = DATA / "scope/astral-scopedom-seqres-gd-sel-gs-bib-40-2.07.fa.gz"


@pytest.fixture(scope="module")
def domains() -> list[LabelledDomain]:
    """The shipped labelled chains cut into their SCOPe domains by the shipped assignment table."""
    kept, _ = crop_domains(read_labels(PROBES / "labels"), read_assignments(PROBES / "assignments.tsv"))
    return kept


def scope_sccs() -> list[str]:
    """The sccs of every domain in the real ASTRAL 40% file."""
    with gzip.open(SCOPE, "rt") as handle:
        return [parse_header(line[1:])[1] for line in handle if line.startswith(">")]


@pytest.mark.parametrize("level", LEVELS)
def test_partition_never_splits_a_group(level):
    sccs = scope_sccs()[:3000]
    groups = [group_key(code, level) for code in sccs]
    parts = partition(groups, [1] * len(groups), 5, seed=1, level=level)
    where = defaultdict(set)
    for group, part in zip(groups, parts):
        where[group].add(part)
    assert all(len(found) == 1 for found in where.values())
    sizes = np.bincount(parts, minlength=5)
    assert sizes.min() > 0.8 * sizes.max()  # balanced by weight
    assert parts == partition(groups, [1] * len(groups), 5, seed=1, level=level)  # seeded
    assert parts != partition(groups, [1] * len(groups), 5, seed=2, level=level)


def test_group_keys():
    assert [group_key("b.1.18.2", level) for level in LEVELS] == ["b.1.18.2", "b.1.18", "b.1"]


def test_too_few_groups_is_an_error_naming_the_counts():
    with pytest.raises(FoldError, match="3 fold group\\(s\\) for 5 partitions"):
        partition(["a.1", "a.1", "b.2", "c.3"], [10, 10, 10, 10], 5, seed=1, level="fold")


def planted_domains(n: int, length: int, clusters: int, seed: int) -> tuple[list[LabelledDomain], list[np.ndarray]]:
    """Proteins whose residues touch exactly the residues of their own (random) cluster, and features that are
    the cluster one-hot next to as many noise columns: a contact signal a bilinear map can read."""
    rng = np.random.default_rng(seed)
    domains, features = [], []
    for k in range(n):
        cluster = rng.integers(clusters, size=length)
        contacts = (cluster[:, None] == cluster[None, :]).astype(np.int8)
        one_hot = np.eye(clusters, dtype=np.float32)[cluster]
        features.append(np.hstack([one_hot, rng.normal(size=(length, clusters)).astype(np.float32)]))
        domains.append(LabelledDomain(f"planted{k}", "a.1.1.1", "A" * length, "C" * length, contacts))
    return domains, features


def test_bilinear_probe_learns_a_planted_contact_signal():
    domains, features = planted_domains(12, 80, 8, seed=0)
    train, test = list(range(8)), list(range(8, 12))
    cfg = ContactProbeConfig(dim=16, epochs=15)
    precision, random_rate, per_protein = contact_precision(train, test, domains, features, cfg)
    assert len(per_protein) == 4 and random_rate < 0.2
    assert precision > 0.9 and precision == pytest.approx(np.mean(per_protein))
    noise = [np.random.default_rng(i).normal(size=f.shape).astype(np.float32) for i, f in enumerate(features)]
    blind, _, _ = contact_precision(train, test, domains, noise, cfg)
    assert blind < 0.3  # without the signal the same probe is at chance


def test_fairseq_train_fits_the_probe_on_a_contact_probe_data_dir(tmp_path, domains):
    features = onehot_features([d.sequence for d in domains])
    contacts = [d.contacts for d in domains]
    data = write_data_dir(tmp_path / "data", {"train": (features[:12], contacts[:12]),
                                              "valid": (features[12:16], contacts[12:16])})
    log = run(["fairseq-train", str(data), "--user-dir", "fairseq_esm", "--task", "contact_probe",
               "--arch", "bilinear_contact_probe", "--criterion", "protein_contacts", "--probe-dim", "8",
               "--optimizer", "adam", "--lr", "1e-3", "--weight-decay", "0.2", "--lr-scheduler", "fixed",
               "--batch-size", "1", "--max-epoch", "2", "--seed", "1", "--num-workers", "0", "--cpu",
               "--save-dir", str(tmp_path / "ck"), "--no-epoch-checkpoints", "--log-format", "json"])
    assert '"train_num_updates": "24"' in log and '"valid_p_at_l_long"' in log  # 12 proteins x 2 epochs; valid scored
    state = checkpoint(tmp_path / "ck" / "checkpoint_last.pt")["model"]
    stacked = np.concatenate(features[:12])
    assert np.allclose(state["mean"].numpy(), stacked.mean(0)) and np.allclose(state["std"], stacked.std(0) + 1e-6)
    probe = BilinearContactProbe(stacked.shape[1], 8)
    probe.load_state_dict(state)  # the fairseq model's state dict is the plain module's


def test_ss8_targets_mask_dots():
    assert ss8_targets("HE.C").tolist() == [SS8.index("H"), SS8.index("E"), -1, SS8.index("C")]


def test_shipped_slice_spans_several_groups_at_every_level(domains):
    assert len(domains) >= 15
    for level in LEVELS:
        assert len({group_key(d.sccs, level) for d in domains}) >= 5
    for domain in domains:
        assert len(domain.ss8) == len(domain.sequence) == len(domain.contacts)


def test_ss8_probe_beats_majority_only_with_informative_features(domains):
    parts = partition([group_key(d.sccs, "fold") for d in domains], [len(d.sequence) for d in domains], 3, seed=1)
    rng = np.random.default_rng(0)
    informative = []  # the true state one-hot, with every residue's state replaced at random 40% of the time
    for d in domains:
        states = np.where(rng.random(len(d.ss8)) < 0.4, rng.integers(len(SS8), size=len(d.ss8)), ss8_targets(d.ss8))
        informative.append(np.eye(len(SS8), dtype=np.float32)[states.clip(0)])
    cfg = ContactProbeConfig(dim=8, epochs=1)
    good = cross_validate(domains, informative, parts, cfg, progress=False)
    assert good["ss8_accuracy"]["mean"] > good["ss8_majority"]["mean"] + 0.2
    noise = [rng.normal(size=(len(d.sequence), 8)).astype(np.float32) for d in domains]
    blind = cross_validate(domains, noise, parts, cfg, progress=False)
    best_constant = []  # the accuracy of the test partition's own most frequent state: no feature-free probe beats it
    for held in range(3):
        states = np.concatenate([ss8_targets(d.ss8) for d, p in zip(domains, parts) if p == held])
        best_constant.append(np.bincount(states[states >= 0]).max() / (states >= 0).sum())
    assert blind["ss8_accuracy"]["mean"] < np.mean(best_constant) + 0.02 < good["ss8_accuracy"]["mean"] - 0.2


def run_cli(tmp_path, checkpoint, *extra) -> tuple[int, dict, str]:
    """main(argv) on the shipped slice: exit status, JSON report, markdown table."""
    out_json, out_md = tmp_path / "probes.json", tmp_path / "probes.md"
    argv = [str(checkpoint), "--labels", str(PROBES / "labels"), "--assignments", str(PROBES / "assignments.tsv"),
            "--folds", "3", "--epochs", "1", "--no-progress", "--json", str(out_json), "--markdown", str(out_md),
            *extra]
    status = run_main(main, argv)
    if status:
        return status, {}, ""
    return status, json.loads(out_json.read_text()), out_md.read_text()


def test_cli_end_to_end_json_and_markdown_agree(tmp_path, official_checkpoint):
    checkpoint = official_checkpoint("esm1b", layers=2, dim=32, ffn=64, heads=4)
    status, report, table = run_cli(tmp_path, checkpoint, "--untrained", "--onehot", "--levels", "superfamily",
                                    "fold")
    assert status == 0
    names = [row["model"] for row in report["rows"]]
    assert len(names) == 4 and names[1].startswith("untrained") and names[2].startswith("residue one-hot")
    lines = table.splitlines()
    assert lines[0].split(" | ")[1:3] == ["SS8 SF", "SS8 fold"] and len(lines) == 2 + len(names)
    for row, line in zip(report["rows"], lines[2:]):
        fold = row["levels"]["fold"]
        ss8, contact = fold["ss8_accuracy"], fold["contact_long_P@L"]
        assert line.startswith(f"| {row['model']} |")
        assert f"{ss8['mean']:.3f}" in line and f"{contact['mean']:.3f}" in line
        assert len(ss8["partitions"]) == 3
    assert report["data"]["domains"] == len(report["domains"]) == sum(report["partition_domains"]["fold"])


@pytest.mark.slow  # a second CLI run; the end-to-end table test stays in make test
def test_cli_per_domain_scores_reproduce_the_table_and_draw_histograms(tmp_path, official_checkpoint):
    checkpoint = official_checkpoint("esm1b", layers=2, dim=32, ffn=64, heads=4)
    status, report, _ = run_cli(tmp_path, checkpoint, "--untrained", "--levels", "family", "fold", "--png-dir",
                                str(tmp_path / "png"))
    assert status == 0
    for level in ("family", "fold"):
        wanted = [(d["name"], d["sccs"], d[f"{level}_partition"]) for d in report["domains"]]
        for row in report["rows"][:2]:
            scores = row["levels"][level]
            per_domain = scores["per_domain"]
            assert [(d["domain"], d["sccs"], d["partition"]) for d in per_domain] == wanted  # each tested once
            for held, (ss8, contact) in enumerate(zip(scores["ss8_accuracy"]["partitions"],
                                                      scores["contact_long_P@L"]["partitions"])):
                mine = [d for d in per_domain if d["partition"] == held]
                pooled = sum(d["ss8_accuracy"] * d["residues"] for d in mine) / sum(d["residues"] for d in mine)
                assert pooled == pytest.approx(ss8, abs=2e-4)  # SS8: pooled over residues
                assert sum(d["residues"] for d in mine) == scores["test_residues"][held]
                precisions = [d["contact_long_P@L"] for d in mine if d["contact_long_P@L"] is not None]
                assert len(precisions) == scores["test_proteins"][held]
                assert np.mean(precisions) == pytest.approx(contact, abs=2e-4)  # contacts: mean over proteins
        png = tmp_path / "png" / f"probes_{level}.png"
        header = png.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        assert (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")) == (1100, 450)
    assert not (tmp_path / "png" / "probes_superfamily.png").exists()


def test_cli_png_dir_that_is_a_file_is_one_error_line(tmp_path, official_checkpoint, capsys):
    checkpoint = official_checkpoint("esm1b", layers=2, dim=32, ffn=64, heads=4)
    (tmp_path / "taken").write_text("")
    status, _, _ = run_cli(tmp_path, checkpoint, "--png-dir", str(tmp_path / "taken"))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: --png-dir")


def test_cli_too_many_folds_is_one_error_line(tmp_path, official_checkpoint, capsys):
    checkpoint = official_checkpoint("esm1b", layers=2, dim=32, ffn=64, heads=4)
    status, _, _ = run_cli(tmp_path, checkpoint, "--folds", "500")
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith("error:") and "for 500 partitions" in err[0]


def test_cli_mismatched_labels_are_one_error_line(tmp_path, official_checkpoint, capsys):
    broken = tmp_path / "labels"
    shutil.copytree(PROBES / "labels", broken)
    (broken / "ss8.txt").write_text("\n".join((broken / "ss8.txt").read_text().splitlines()[:-1]) + "\n")
    checkpoint = official_checkpoint("esm1b", layers=2, dim=32, ffn=64, heads=4)
    status = run_main(main, [str(checkpoint), "--labels", str(broken), "--assignments",
                             str(PROBES / "assignments.tsv"), "--json", str(tmp_path / "j"), "--markdown",
                             str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "lines in ss8.txt" in err[0]


def test_malformed_assignment_table_names_file_and_line(tmp_path):
    table = tmp_path / "bad.tsv"
    table.write_text((PROBES / "assignments.tsv").read_text().splitlines()[0] + "\nchain\tdomain\n")
    with pytest.raises(FoldError, match="bad.tsv:2"):
        read_assignments(table)


def test_mmseqs_transfer_reproduces_the_shipped_assignments(tmp_path):
    assert shutil.which("mmseqs"), "MMseqs2 missing: make env installs it (preprocess/install_tools.sh)"
    shipped = read_assignments(PROBES / "assignments.tsv")[:6]
    wanted = {hit.domain for hit in shipped}
    with gzip.open(SCOPE, "rt") as handle:
        records = handle.read().split("\n>")
    targets = [r for r in records if r.lstrip(">").split(None, 1)[0] in wanted]
    decoys = records[1000:1200]  # unrelated domains the search must not pick
    fasta = tmp_path / "astral_slice.fa"
    fasta.write_text("".join(">" + r.lstrip(">").rstrip("\n") + "\n" for r in targets + decoys))
    chains = {name: seq for name, seq, *_ in read_labels(PROBES / "labels")}
    queries = sorted({hit.chain for hit in shipped})
    found = search_domains([(name, chains[name]) for name in queries], fasta)
    assert {(h.chain, h.domain, h.sccs) for h in found} >= {(h.chain, h.domain, h.sccs) for h in shipped}


def test_residue_identity_carries_some_ss8_signal_on_real_labels(domains):
    parts = partition([d.sccs for d in domains], [len(d.sequence) for d in domains], 3, seed=1)
    scores = cross_validate(domains, onehot_features([d.sequence for d in domains]), parts,
                            ContactProbeConfig(dim=8, epochs=1), progress=False)
    assert scores["ss8_accuracy"]["mean"] > scores["ss8_majority"]["mean"] + 0.05
    assert scores["test_residues"] and sum(scores["test_residues"]) <= sum(len(d.ss8) for d in domains)
