"""Mutational-effect fine-tuning (Figure 7) on real TEM-1 beta-lactamase DMS rows (the shipped Stiffler
2015 slice): the head is the zero-shot masked marginal before training, the task's batches score exactly what
the head scores, the folds partition the variants, fairseq-train (the task, in process or as a command) lowers
the training loss and --train-layers freezes the rest, and the CLI writes its tables and counts every row."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.training import checkpoint, run, update_stats

from fairseq_esm.checkpoints import load_model
from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.finetune_variants import build_parser, main
from fairseq_esm.criterions.mutational_effect import variant_scores
from fairseq_esm.data.integrity import DataIntegrityError
from fairseq_esm.data.mutational_effect import MutationalEffectDataset, read_split, write_data_dir
from fairseq_esm.evaluation.dms_folds import fold_ids
from fairseq_esm.evaluation.mutational_finetune import (
    FinetuneConfig,
    VariantHead,
    cross_validate,
    standardise,
    variant_code,
)
from fairseq_esm.inference.variant_scoring import score_variants
from fairseq_esm.io.mutations import check_rows, subsample
from fairseq_esm.modules.batching import residue_budget

DMS = Path(__file__).resolve().parents[1] / "examples" / "data" / "dms"
FASTA = DMS / "BLAT_ECOLX.fasta"
SLICE = DMS / "BLAT_ECOLX_Stiffler_2015_slice.csv"
WT = "".join(FASTA.read_text().splitlines()[1:])
TINY = dict(layers=2, dim=32, ffn=64, heads=4)  # max_positions 128: the 286-residue protein is windowed
#: fairseq-train's options for the TINY official model
TINY_ARCH = ["--arch", "esm1b", "--encoder-layers", "2", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
             "--encoder-attention-heads", "4", "--max-positions", "128"]


@pytest.fixture(scope="module")
def tiny(official_checkpoint):
    return load_model(official_checkpoint("esm1b", **TINY))


def variants_of(codes: list[str], budget: int) -> list:
    checks, _ = check_rows(codes, WT, 1, budget)
    assert all(c.status in ("ok", "duplicate") for c in checks)
    return [c.variant for c in checks]


def test_head_equals_zero_shot_masked_marginal_before_training(tiny, dms_rows):
    model, alphabet = tiny
    budget = residue_budget(model.max_positions(), alphabet)
    singles = [r["mutant"] for r in dms_rows[::7]]
    codes = singles + [f"{singles[3]}:{singles[4]}", f"{singles[10]}:{singles[12]}", singles[3]]  # doubles, repeat
    variants = variants_of(codes, budget)
    head = VariantHead(alphabet, WT, variants, budget)
    expected = score_variants(model, alphabet, WT, variants, "masked-marginal").scores
    assert head.predict(model) == pytest.approx(expected, abs=1e-5)
    assert len(head.queries) < len(variants)  # the repeat and singles at one position share a forward
    _, with_grad = head.forward(model, [0, 1])
    assert with_grad.requires_grad


def test_folds_partition_the_variants_80_20_and_are_deterministic():
    ids = fold_ids(313, 5, seed=1)
    parts = [set(np.flatnonzero(ids == k)) for k in range(5)]
    assert set().union(*parts) == set(range(313)) and sum(map(len, parts)) == 313  # cover, disjoint
    assert sorted(map(len, parts)) == [62, 62, 63, 63, 63]  # 20% each, so 80/20 train/test
    assert (fold_ids(313, 5, seed=1) == ids).all()
    assert not (fold_ids(313, 5, seed=2) == ids).all()
    assert subsample(313, 50, 1) == subsample(313, 50, 1) == sorted(set(subsample(313, 50, 1)))
    assert len(subsample(313, 50, 1)) == 50 and subsample(313, 500, 1) == list(range(313))


def test_task_batches_score_what_the_head_scores(tiny, dms_rows, tmp_path):
    """One sample per position set: the masked window of ``window_query`` and, through the criterion's scoring,
    the head's score of every variant (singles and doubles, one batch)."""
    model, alphabet = tiny
    budget = residue_budget(model.max_positions(), alphabet)
    singles = [r["mutant"] for r in dms_rows[::5]]
    codes = singles + [f"{singles[3]}:{singles[9]}", f"{singles[0]}:{singles[20]}", singles[3]]
    variants = variants_of(codes, budget)
    targets = np.linspace(-1, 1, len(variants))
    data = write_data_dir(tmp_path / "data", WT, {"train": ([variant_code(v) for v in variants], targets)})
    dataset = MutationalEffectDataset(alphabet, WT, *read_split(data / "train.tsv", WT, budget), budget)
    head = VariantHead(alphabet, WT, variants, budget)
    assert len(dataset) == len(head.queries) < len(variants)
    for item, query in zip([dataset[i] for i in range(len(dataset))], head.queries):
        expected = query.tokens.clone()
        expected[list(query.mask_at)] = alphabet.mask_idx
        assert torch.equal(item["tokens"], expected) and tuple(item["read_at"].tolist()) == query.read_at
    batch = dataset.collater([dataset[i] for i in range(len(dataset))])
    order = [i for members in dataset.members for i in members]
    with torch.no_grad():
        scores = variant_scores(model, batch).numpy()
    assert scores == pytest.approx(head.predict(model)[order], abs=1e-5)
    assert batch["target"].numpy() == pytest.approx(targets[order])
    (data / "bad.tsv").write_text("mutant\tscore\nS68A\t0.5\nS68G:S68A\t1\n")
    with pytest.raises(DataIntegrityError, match=r"bad.tsv:3: 'S68G:S68A' mutates position 68 twice"):
        read_split(data / "bad.tsv", WT, budget)


def test_cross_validate_trains_through_fairseq_and_leaves_the_model_alone(tiny, dms_rows):
    model, alphabet = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = dms_rows[:80]
    variants = variants_of([r["mutant"] for r in rows], residue_budget(model.max_positions(), alphabet))
    cfg = FinetuneConfig(folds=2, epochs=4, lr=1e-3, batch_sequences=8, train_layers=1)
    results = cross_validate(model, alphabet, WT, variants, [float(r["DMS_score"]) for r in rows], cfg, progress=False)
    assert [(r.n_train, r.n_test) for r in results] == [(40, 40), (40, 40)]
    for r in results:  # each epoch's mean training MSE, as fairseq logged it
        assert len(r.train_loss) == 4 and r.train_loss[-1] < 0.8 * r.train_loss[0], r.train_loss
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fairseq_train_and_validate_with_the_task(official_checkpoint, dms_rows, tmp_path):
    """The task as a user runs it: fairseq-train with --train-layers 1, then fairseq-validate with the same
    criterion prints the mean squared error of the trained head on the held-out variants."""
    start = official_checkpoint("esm1b", **TINY)
    codes, values = [r["mutant"] for r in dms_rows[:160]], np.array([float(r["DMS_score"]) for r in dms_rows[:160]])
    scaled = standardise(values, values[:120])
    data = write_data_dir(tmp_path / "data", WT, {"train": (codes[:120], scaled[:120]),
                                                   "valid": (codes[120:], scaled[120:])})
    save = tmp_path / "ck"
    log = run(["fairseq-train", str(data), "--user-dir", "fairseq_esm", "--task", "mutational_effect", "--criterion",
               "mutational_effect", *TINY_ARCH, "--pretrained-checkpoint", str(start), "--train-layers", "1",
               "--optimizer", "adam", "--lr", "1e-3", "--weight-decay", "0.01", "--lr-scheduler", "fixed",
               "--batch-size", "8", "--max-update", "6", "--disable-validation", "--save-dir", str(save),
               "--no-epoch-checkpoints", "--num-workers", "0", "--cpu", "--log-format", "json", "--log-interval", "1"])
    assert sorted(update_stats(log)) == list(range(1, 7))
    trained, first = checkpoint(save / "checkpoint_last.pt")["model"], load_model(start)[0].state_dict()
    for frozen in ("layers.0.self_attn.q_proj.weight", "embed_tokens.weight"):
        assert torch.equal(trained[frozen], first[frozen])
    assert not torch.equal(trained["layers.1.self_attn.q_proj.weight"], first["layers.1.self_attn.q_proj.weight"])
    out = run(["fairseq-validate", str(data), "--user-dir", "fairseq_esm", "--task", "mutational_effect",
               "--criterion", "mutational_effect", "--path", str(save / "checkpoint_last.pt"),
               "--valid-subset", "valid", "--batch-size", "8", "--num-workers", "0", "--cpu"])
    printed = float(re.search(r"valid on 'valid' subset \| loss ([\d.]+)", out).group(1))
    model, alphabet = load_model(save / "checkpoint_last.pt")
    budget = residue_budget(model.max_positions(), alphabet)
    predicted = VariantHead(alphabet, WT, variants_of(codes[120:], budget), budget).predict(model)
    assert printed == pytest.approx(float(np.mean((predicted - scaled[120:]) ** 2)), abs=2e-4)


def write_table(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["mutant", "DMS_score"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_cli_writes_json_and_markdown_and_counts_bad_rows(official_checkpoint, dms_rows, tmp_path, capsys):
    bad = [{"mutant": "H24", "DMS_score": "0.1"}, {"mutant": "A24G", "DMS_score": "0.2"},
           {"mutant": dms_rows[0]["mutant"], "DMS_score": "0.3"},  # duplicate of row 1
           {"mutant": dms_rows[1]["mutant"] + "x", "DMS_score": ""}, {"mutant": "K900R", "DMS_score": "1"}]
    table = write_table(tmp_path / "dms.csv", dms_rows[:120] + bad + [{"mutant": "S68A", "DMS_score": "n/a"}])
    out_json, out_md = tmp_path / "cv.json", tmp_path / "new" / "cv.md"  # folders are made
    args = [str(official_checkpoint("esm1b", **TINY)), "--table", str(table), "--sequence", str(FASTA),
            "--folds", "5", "--epochs", "1", "--lr", "1e-3", "--max-variants", "100", "--seed", "3",
            "--fold-scheme", "random", "--json", str(out_json), "--markdown", str(out_md)]
    assert main(args) == 0
    result = json.loads(out_json.read_text())
    column = result["columns"]["DMS_score"]
    assert column["counts"] == {"rows": 126, "used": 100, "duplicate": 1, "malformed": 2, "out_of_range": 1,
                                "wt_mismatch": 1, "no_numeric_score": 1, "left_out_by_max_variants": 20}
    folds = column["schemes"]["random"]["folds"]
    assert [(f["n_train"], f["n_test"]) for f in folds] == [(80, 20)] * 5
    for key in ("zero_shot_rho", "finetuned_rho", "blosum62_rho", "onehot_ridge_rho"):
        assert all(-1 <= f[key] <= 1 for f in folds), key
    # 100 of TEM-1's 263 positions: most test positions are new to training, so the per-position mean may be constant
    assert all(f["position_mean_rho"] is None or -1 <= f["position_mean_rho"] <= 1 for f in folds)
    lines = out_md.read_text().splitlines()
    assert lines[0] == "## DMS_score" and len(lines) == 10
    assert lines[2] == ("| scheme | fold | n_train | n_test | fine-tuned ρ | zero-shot ρ | BLOSUM62 ρ | "
                        "per-position mean ρ | one-hot ridge ρ |")
    assert lines[-1].startswith("| random | mean ± sd |")
    err = capsys.readouterr().err
    assert "malformed 2" in err and "cross-validation rows of DMS_score: rows 126, used 100" in err
    assert main(args) == 0 and json.loads(out_json.read_text())["columns"] == result["columns"]  # seeded: same again


def test_cli_one_line_errors(official_checkpoint, dms_rows, tmp_path, capsys):
    checkpoint = str(official_checkpoint("esm1b", **TINY))
    table = write_table(tmp_path / "few.csv", dms_rows[:10])
    common = ["--json", str(tmp_path / "x.json"), "--markdown", str(tmp_path / "x.md")]
    assert run_main(main, [checkpoint, "--table", str(table), "--sequence", str(FASTA), *common]) == 2
    assert "10 usable variants, too few for 5 folds" in capsys.readouterr().err
    assert run_main(main, [checkpoint, "--table", str(table), "--sequence", str(FASTA), "--score-col", "fitness",
                           *common]) == 2
    assert "no column 'fitness'" in capsys.readouterr().err
    assert run_main(main, [checkpoint, "--table", str(table), "--sequence", "wt.fata", *common]) == 2
    assert "no such file, and not a protein sequence" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_old_flag_spellings_still_parse(capsys):
    args = build_parser().parse_args(["ckpt", "--table", "t.csv", "--sequence", "MKT", "--json", "j", "--markdown", "m",
                                      "--batch-sequences", "4", "--mutant-column", "m", "--score-column", "s"])
    assert (args.batch_size, args.mutation_col, args.score_col) == (4, "m", ["s"])  # --score-col takes several
    err = capsys.readouterr().err
    for old, new in [("--batch-sequences", "--batch-size"), ("--mutant-column", "--mutation-col"),
                     ("--score-column", "--score-col")]:
        assert f"note: {old} is deprecated; use {new}" in err
