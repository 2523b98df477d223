"""Variant effects evaluated the way practitioners run them, on real TEM-1 beta-lactamase DMS rows (the shipped
Stiffler 2015 slice): a ProteinGym reference table as the wild type, synonymous codes, several measured columns,
the offset that makes every wild-type letter agree, ProteinGym's fold schemes, the baselines fitted on training
folds only (against direct scikit-learn computations), BLOSUM62's Spearman rho, subsamples and the scatter plot."""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from Bio.Align import substitution_matrices
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold

from fairseq_esm.checkpoints import load_model
from fairseq_esm.cli import finetune_variants, variants
from fairseq_esm.cli.common import run_main
from fairseq_esm.errors import InputError
from fairseq_esm.evaluation.dms_folds import LEFT_OUT, SCHEMES, assign_folds
from fairseq_esm.evaluation.variant_baselines import INNER_FOLDS, RIDGE_ALPHAS, position_mean_predict, ridge_predict
from fairseq_esm.evaluation.variant_plots import DPI, PANEL_SIZE
from fairseq_esm.inference.variant_scoring import score_variants
from fairseq_esm.io.mutations import check_rows, parse_variant, reference_entry, subsample

DMS = Path(__file__).resolve().parents[1] / "examples" / "data" / "dms"
FASTA = DMS / "BLAT_ECOLX.fasta"
WT = "".join(FASTA.read_text().splitlines()[1:])
DMS_ID = "BLAT_ECOLX_Stiffler_2015"
SMALL = dict(layers=1, dim=32, ffn=64, max_positions=320)  # the whole 286-residue protein in one window
TINY = dict(layers=2, dim=32, ffn=64, heads=4)  # test_finetune_variants' model for fine-tuning
BLOSUM62 = substitution_matrices.load("BLOSUM62")
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def synonymous(index: int) -> str:
    """A synonymous code at 0-based ``index`` of the wild type (``P311P``-style)."""
    return f"{WT[index]}{index + 1}{WT[index]}"


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture()
def reference(tmp_path) -> Path:
    """A ProteinGym-style reference table: the real BLAT_ECOLX row (target_seq from the shipped FASTA) and another
    assay. MSA_start is not a numbering of the mutations, which ProteinGym gives on target_seq from 1."""
    return write_csv(tmp_path / "DMS_substitutions.csv", [
        {"DMS_id": DMS_ID, "DMS_filename": f"{DMS_ID}.csv", "UniProt_ID": "BLAT_ECOLX", "taxon": "Prokaryote",
         "target_seq": WT, "seq_len": len(WT), "MSA_start": 24, "MSA_end": 286},
        {"DMS_id": "GFP_AEQVI_Sarkisyan_2016", "DMS_filename": "GFP_AEQVI_Sarkisyan_2016.csv",
         "UniProt_ID": "GFP_AEQVI", "taxon": "Eukaryote", "target_seq": "MSKGEELFTGVVPILVELDGDVNGHKFSVSGEG",
         "seq_len": 33, "MSA_start": 1, "MSA_end": 33}])


def spearman_lines(err: str) -> dict[tuple[str, str], tuple[str, int]]:
    """(predictor, column) -> (printed rho, n) of every Spearman line on stderr."""
    found = re.findall(r"^Spearman rho (.+) vs (\S+): (\S+) \(p=[^;]+; n=([\d,]+) scored rows", err, flags=re.M)
    return {(name, column): (rho, int(n.replace(",", ""))) for name, column, rho, n in found}


def blosum(code: str) -> float:
    """The sum of BLOSUM62 over a code's mutations, straight from Biopython."""
    return sum(float(BLOSUM62[part[0]][part[-1]]) for part in code.split(":"))


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


# mutation codes: synonymous rows and the offset hint


def test_synonymous_codes_are_counted_and_scored_only_on_request(dms_rows):
    codes = [r["mutant"] for r in dms_rows[:6]] + [synonymous(30), synonymous(100), f"{synonymous(30)}", "K24K"]
    checks, report = check_rows(codes, WT)
    assert [c.status for c in checks] == ["ok"] * 6 + ["synonymous"] * 3 + ["wt_mismatch"]  # K24K: WT has H there
    assert all(c.variant is None for c in checks[6:])
    assert "6 scored, ok 6, duplicate 0" in report.format() and "synonymous 3" in report.format()
    kept, kept_report = check_rows(codes, WT, keep_synonymous=True)
    assert [c.status for c in kept] == [c.status for c in checks]
    assert all(c.variant is not None for c in kept[:9]) and "9 scored" in kept_report.format()
    mixed, _ = check_rows([f"{dms_rows[0]['mutant']}:{synonymous(100)}"], WT)
    assert mixed[0].status == "ok"  # a multi-mutant with one synonymous part is a real variant


def test_offset_hint_names_the_offset_under_which_every_wild_type_letter_agrees(dms_rows):
    codes = [r["mutant"] for r in dms_rows[:40]]
    shifted = [f"{c[0]}{int(c[1:-1]) + 5}{c[-1]}" for c in codes]
    _, report = check_rows(shifted, WT)
    hint = report.suggested_offset
    assert (hint.offset, hint.matches, hint.total, hint.all_agree) == (6, 40, 40, True)
    assert "hint: --offset 6 would match the wild type at all 40 mutated positions: every wild-type letter agrees" \
        in report.format()
    wrong_letter = "W" if WT[int(codes[0][1:-1]) - 1] != "W" else "A"
    _, report = check_rows([f"{wrong_letter}{shifted[0][1:]}"] + shifted[1:], WT)
    hint = report.suggested_offset
    assert (hint.offset, hint.matches, hint.total, hint.all_agree) == (6, 39, 40, False)
    assert ("hint: --offset 6 would match the wild type at 39 of the 40 mutated positions (no offset makes every "
            "wild-type letter agree)") in report.format()
    _, report = check_rows(codes[:39] + [f"{wrong_letter}{codes[0][1:]}"], WT)
    assert report.counts["wt_mismatch"] == 1 and report.suggested_offset is None  # no offset fixes a wrong letter


# the ProteinGym reference table


def test_reference_entry_lookup_and_its_errors(reference, tmp_path):
    entry = reference_entry(reference, DMS_ID)
    assert (entry.dms_id, entry.target_seq, entry.filename, entry.uniprot_id) == (
        DMS_ID, WT, f"{DMS_ID}.csv", "BLAT_ECOLX")
    assert reference_entry(reference, None, tmp_path / f"{DMS_ID}.csv").dms_id == DMS_ID  # by DMS_filename
    with pytest.raises(InputError, match=r"0 rows name the table 'other.csv'.*pass --dms-id"):
        reference_entry(reference, None, tmp_path / "other.csv")
    rows = read_csv(reference)
    write_csv(tmp_path / "bad_len.csv", [{**rows[0], "seq_len": "280"}])
    with pytest.raises(InputError, match="has seq_len 280 but its target_seq has 286 residues"):
        reference_entry(tmp_path / "bad_len.csv", DMS_ID)


def test_reference_table_gives_the_wild_type_in_both_tools(official_checkpoint, dms_rows, reference, tmp_path,
                                                            capsys):
    checkpoint = str(official_checkpoint("esm1b", **SMALL))
    table = write_csv(tmp_path / f"{DMS_ID}.csv", dms_rows[:25])
    out = tmp_path / "out.csv"
    base = [checkpoint, "--table", str(table), "--out", str(out)]
    assert run_main(variants.main, [*base, "--fasta", str(FASTA)]) == 0
    from_fasta = read_csv(out)
    for extra in (["--dms-id", DMS_ID], []):  # named, then found by the table's file name
        assert run_main(variants.main, [*base, "--reference", str(reference), *extra]) == 0
        assert read_csv(out) == from_fasta
    err = capsys.readouterr().err
    assert f"wild type: target_seq of {DMS_ID} in {reference}, 286 residues (UniProt BLAT_ECOLX)" in err

    no_seq = write_csv(tmp_path / "no_seq.csv", [{k: v for k, v in r.items() if k != "target_seq"}
                                                for r in read_csv(reference)])
    finetune_base = [checkpoint, "--table", str(table), "--json", str(tmp_path / "x.json"), "--markdown",
                     str(tmp_path / "x.md")]
    for tool, tool_base in ((variants.main, base), (finetune_variants.main, finetune_base)):
        cases = [
            (["--reference", str(reference), "--dms-id", "BLAT_ECOLX_Nobody_1999"],
             [str(reference), "'BLAT_ECOLX_Nobody_1999'", "check --dms-id"]),
            (["--reference", str(no_seq), "--dms-id", DMS_ID], [str(no_seq), "no column 'target_seq'"]),
            (["--fasta", str(FASTA), "--dms-id", DMS_ID], ["--dms-id", "pass --reference"]),
        ]
        for extra, needles in cases:
            out.unlink(missing_ok=True)
            assert run_main(tool, [*tool_base, *extra]) == 2
            lines = error_lines(capsys.readouterr().err)
            assert len(lines) == 1 and all(n in lines[0] for n in needles), (extra, lines)
            assert not out.exists()
        with pytest.raises(SystemExit) as exited:  # the three sources of the wild type exclude each other
            tool([*tool_base, "--fasta", str(FASTA), "--reference", str(reference)])
        assert exited.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


# zero-shot: several measured columns, synonymous rows, BLOSUM62, subsample, plot


def test_columns_synonymous_rows_and_blosum62_spearman(official_checkpoint, dms_rows, tmp_path, capsys):
    checkpoint = str(official_checkpoint("esm1b", **SMALL))
    rows = [{"mutant": r["mutant"], "DMS_score": r["DMS_score"], "fitness": f"{-float(r['DMS_score']) ** 3:.5f}"}
            for r in dms_rows[:60:2]]
    rows[3]["fitness"] = ""  # measured in one column only
    rows += [{"mutant": synonymous(30), "DMS_score": "5", "fitness": "-5"},
             {"mutant": synonymous(150), "DMS_score": "6", "fitness": "-6"}]
    table, out = write_csv(tmp_path / "t.csv", rows), tmp_path / "out.csv"
    argv = [checkpoint, "--fasta", str(FASTA), "--table", str(table), "--out", str(out), "--score-col", "DMS_score",
            "fitness", "--scoring-strategy", "masked-marginal", "wt-marginal"]
    assert run_main(variants.main, argv) == 0
    err = capsys.readouterr().err
    assert "mutation table: 32 rows, 30 scored, ok 30" in err and "synonymous 2" in err
    scored = read_csv(out)
    assert [r["status"] for r in scored[30:]] == ["synonymous"] * 2 and scored[30]["masked_marginal"] == ""
    lines = spearman_lines(err)
    assert len(lines) == 2 * 3  # (masked-marginal, wt-marginal, BLOSUM62) x two columns
    for column in ("DMS_score", "fitness"):
        real = [r for r in scored[:30] if r[column]]
        measured = [float(r[column]) for r in real]
        for name, values in (("masked-marginal", [float(r["masked_marginal"]) for r in real]),
                             ("wt-marginal", [float(r["wt_marginal"]) for r in real]),
                             ("BLOSUM62", [blosum(r["mutant"]) for r in real])):
            assert lines[name, column] == (f"{spearmanr(values, measured)[0]:.4f}", len(real)), (name, column)
    assert lines["BLOSUM62", "fitness"][1] == 29

    assert run_main(variants.main, argv + ["--keep-synonymous"]) == 0
    kept = read_csv(out)
    assert [r["masked_marginal"] for r in kept[30:]] == ["0.000000"] * 2  # the wild type scores 0
    assert [r["status"] for r in kept[30:]] == ["synonymous"] * 2
    lines = spearman_lines(capsys.readouterr().err)
    measured = [float(r["DMS_score"]) for r in kept]
    assert lines["masked-marginal", "DMS_score"] == (
        f"{spearmanr([float(r['masked_marginal']) for r in kept], measured)[0]:.4f}", 32)
    assert lines["BLOSUM62", "DMS_score"] == (f"{spearmanr([blosum(r['mutant']) for r in kept], measured)[0]:.4f}", 32)


def test_max_variants_subsample_and_scatter_plot(official_checkpoint, dms_rows, tmp_path, capsys):
    import matplotlib.image

    checkpoint = str(official_checkpoint("esm1b", **SMALL))
    rows = [{**r, "other": f"{float(r['DMS_score']) * 2:.4f}"} for r in dms_rows[:50]]
    table, out, picture = write_csv(tmp_path / "t.csv", rows), tmp_path / "out.csv", tmp_path / "pics" / "scatter.png"
    argv = [checkpoint, "--fasta", str(FASTA), "--table", str(table), "--out", str(out), "--max-variants", "20",
            "--score-col", "DMS_score", "other", "--scoring-strategy", "masked-marginal", "wt-marginal",
            "--plot", str(picture)]
    assert run_main(variants.main, argv) == 0
    first = read_csv(out)
    statuses = [r["status"] for r in first]
    assert statuses.count("ok") == 20 and statuses.count("not_sampled") == 30
    assert all((r["masked_marginal"] != "") == (r["status"] == "ok") for r in first)
    assert [i for i, s in enumerate(statuses) if s == "ok"] == subsample(50, 20, 1)  # the seeded subsample
    err = capsys.readouterr().err
    assert "20 scored" in err and "not_sampled 30" in err and spearman_lines(err)["BLOSUM62", "other"][1] == 20
    image = matplotlib.image.imread(picture)  # 2 strategies x 2 measured columns, one panel each
    assert image.shape[:2] == (round(2 * PANEL_SIZE[1] * DPI), round(2 * PANEL_SIZE[0] * DPI))
    assert image[..., :3].std() > 0.05  # something is drawn
    assert run_main(variants.main, argv) == 0 and read_csv(out) == first  # the same rows again
    assert run_main(variants.main, argv + ["--seed", "2"]) == 0
    assert [r["status"] for r in read_csv(out)] != statuses
    capsys.readouterr()
    plain = write_csv(tmp_path / "plain.csv", [{"mutant": r["mutant"]} for r in dms_rows[:5]])
    assert run_main(variants.main, [checkpoint, "--fasta", str(FASTA), "--table", str(plain), "--out", str(out),
                                    "--plot", str(picture)]) == 2
    assert "--plot:" in error_lines(capsys.readouterr().err)[0]


# fold schemes and baselines


@pytest.fixture(scope="module")
def fold_variants(dms_rows):
    """The slice's 313 real single mutants plus doubles, some within one region and some across the protein."""
    singles = [r["mutant"] for r in dms_rows]
    site = [int(c[1:-1]) for c in singles]
    near = [f"{singles[i]}:{singles[j]}" for i, j in zip(range(0, 80, 8), range(2, 82, 8)) if site[i] != site[j]]
    codes = singles + near + [f"{singles[i]}:{singles[-1 - i]}" for i in range(10)]
    checks, _ = check_rows(codes, WT)
    assert all(c.status in ("ok", "duplicate") for c in checks)
    return [c.variant for c in checks]


def positions_of(variants, indices) -> set[int]:
    return {m.index for i in indices for m in variants[i]}


def test_fold_schemes_as_proteingym_defines_them(fold_variants):
    n, k = len(fold_variants), 5
    plan = assign_folds(fold_variants, "random", k, seed=4)
    tests = [plan.split(f)[1] for f in range(k)]
    assert sorted(np.concatenate(tests).tolist()) == list(range(n))  # every variant tested exactly once
    assert max(map(len, tests)) - min(map(len, tests)) <= 1 and plan.left_out == 0
    assert not (assign_folds(fold_variants, "random", k, seed=5).ids == plan.ids).all()

    ordered = sorted({m.index for v in fold_variants for m in v})
    for scheme in ("modulo", "contiguous"):
        plan = assign_folds(fold_variants, scheme, k, seed=4)
        for fold in range(k):
            train, test = plan.split(fold)
            assert len(test) and not positions_of(fold_variants, train) & positions_of(fold_variants, test), scheme
            if scheme == "contiguous":  # one run of consecutive mutated positions, no other fold's inside it
                low, high = min(positions_of(fold_variants, test)), max(positions_of(fold_variants, test))
                inside = [p for p in ordered if low <= p <= high]
                assert set(inside) <= positions_of(fold_variants, test)
                assert len(inside) in (len(ordered) // k, len(ordered) // k + 1)
        singles = [i for i, v in enumerate(fold_variants) if len(v) == 1]
        if scheme == "modulo":  # the r-th mutated position (sorted) goes to fold r mod K
            assert all(plan.ids[i] == ordered.index(fold_variants[i][0].index) % k for i in singles)
        spanning = sum(len({plan.ids[j] for j in singles if fold_variants[j][0].index in {m.index for m in v}}) > 1
                       for v in fold_variants if len(v) > 1)
        assert plan.left_out == spanning > 0 and (plan.ids[singles] != LEFT_OUT).all()
    assert SCHEMES == tuple(finetune_variants.FOLD_SCHEMES)
    with pytest.raises(InputError, match="modulo folds need at least 5 mutated positions; the variants mutate 2"):
        assign_folds([parse_variant(c) for c in ("H24C", "H24A", "P25V")], "modulo", 5, 1)


def one_hot_sequences(variants) -> np.ndarray:
    """Dense one-hot of each mutant's whole sequence (20 columns per position): the textbook encoding."""
    x = np.zeros((len(variants), len(WT) * 20))
    for row, variant in enumerate(variants):
        sequence = list(WT)
        for m in variant:
            sequence[m.index] = m.mt
        for i, residue in enumerate(sequence):
            x[row, i * 20 + AMINO.index(residue)] = 1.0
    return x


def direct_position_mean(train, targets, test) -> np.ndarray:
    table: dict[int, list[float]] = {}
    for variant, value in zip(train, targets):
        for m in variant:
            table.setdefault(m.index, []).append(value)
    return np.array([np.mean([np.mean(table.get(m.index, targets)) for m in v]) for v in test])


def direct_ridge(train, targets, test, seed) -> np.ndarray:
    """Dense ridge on the whole mutant sequences' one-hot; alpha by the inner 3-fold CV's mean R², the largest of
    those within 1e-9 of the best (a tie when no inner test variant shares a feature with its training part)."""
    x = one_hot_sequences(train)
    varying = x.std(axis=0) > 0  # ridge centres the columns: a constant one is all zeros and gets no weight
    x = x[:, varying]
    search = GridSearchCV(Ridge(), {"alpha": list(RIDGE_ALPHAS)}, cv=KFold(INNER_FOLDS, shuffle=True,
                                                                          random_state=seed)).fit(x, targets)
    scores = np.nan_to_num(search.cv_results_["mean_test_score"], nan=-np.inf)
    alpha = max(a for a, score in zip(RIDGE_ALPHAS, scores) if score >= scores.max() - 1e-9)
    return Ridge(alpha=alpha).fit(x, targets).predict(one_hot_sequences(test)[:, varying])


def test_baselines_fit_one_training_fold_as_scikit_learn_does(fold_variants, dms_rows):
    values = np.array([float(r["DMS_score"]) for r in dms_rows] + [0.1 * i for i in range(20)])
    plan = assign_folds(fold_variants, "random", 5, seed=1)
    train, test = plan.split(2)
    train_v, test_v = [fold_variants[i] for i in train], [fold_variants[i] for i in test]
    assert ridge_predict(train_v, values[train], test_v, 7) == pytest.approx(
        direct_ridge(train_v, values[train], test_v, 7), abs=1e-6)
    assert position_mean_predict(train_v, values[train], test_v) == pytest.approx(
        direct_position_mean(train_v, values[train], test_v), abs=1e-12)


def test_finetune_schemes_columns_and_baselines_on_the_same_folds(official_checkpoint, dms_rows, reference, tmp_path,
                                                                  capsys):
    """Two measured columns x three schemes x 2 folds of fine-tuning, from a reference table; every baseline's rho
    recomputed directly on the folds the tool drew, fitted on the training folds alone."""
    checkpoint = official_checkpoint("esm1b", **TINY)
    per_site = Counter(int(r["mutant"][1:-1]) for r in dms_rows)
    paired = [r for r in dms_rows if per_site[int(r["mutant"][1:-1])] == 2]  # 50 positions measured twice
    rows = [{"mutant": r["mutant"], "DMS_score": r["DMS_score"], "activity": f"{float(r['DMS_score']) ** 2:.5f}"}
            for r in paired]
    for i in (5, 17, 40):
        rows[i]["activity"] = "nan"
    rows.append({"mutant": synonymous(60), "DMS_score": "0.5", "activity": "0.5"})
    table, out_json, out_md = write_csv(tmp_path / "dms.csv", rows), tmp_path / "cv.json", tmp_path / "cv.md"
    argv = [str(checkpoint), "--reference", str(reference), "--dms-id", DMS_ID, "--table", str(table),
            "--score-col", "DMS_score", "activity", "--folds", "2", "--epochs", "1", "--lr", "1e-3",
            "--max-variants", "60", "--seed", "3", "--no-progress", "--json", str(out_json), "--markdown", str(out_md)]
    assert finetune_variants.main(argv) == 0
    result = json.loads(out_json.read_text())
    assert result["fold_schemes"] == list(SCHEMES) and result["score_columns"] == ["DMS_score", "activity"]
    assert result["wild_type"] == {"source": f"--reference {reference}", "dms_id": DMS_ID, "length": 286}
    model, alphabet = load_model(checkpoint)
    defined = Counter()
    for column, no_numeric in (("DMS_score", 0), ("activity", 3)):
        counts = result["columns"][column]["counts"]
        assert counts == {"rows": 101, "used": 60, "synonymous": 1, "no_numeric_score": no_numeric,
                          "left_out_by_max_variants": 100 - no_numeric - 60}
        numeric = [i for i in range(100) if not math.isnan(float(rows[i][column]))]
        kept = [numeric[i] for i in subsample(len(numeric), 60, 3)]
        variants_ = [parse_variant(rows[i]["mutant"]) for i in kept]
        values = np.array([float(rows[i][column]) for i in kept])
        zero_shot = np.array(score_variants(model, alphabet, WT, variants_, "masked-marginal").scores)
        for scheme in SCHEMES:
            plan = assign_folds(variants_, scheme, 2, 3)
            entry = result["columns"][column]["schemes"][scheme]
            assert entry["left_out"] == 0 and len(entry["folds"]) == 2
            for fold in entry["folds"]:
                train, test = plan.split(fold["fold"] - 1)
                assert (fold["scheme"], fold["n_train"], fold["n_test"]) == (scheme, len(train), len(test))
                train_v, test_v = [variants_[i] for i in train], [variants_[i] for i in test]
                expected = {
                    "zero_shot_rho": zero_shot[test],
                    "blosum62_rho": [blosum(rows[kept[i]]["mutant"]) for i in test],
                    # rounded as the tool rounds them: test variants sharing a prediction tie in the ranks
                    "position_mean_rho": np.round(direct_position_mean(train_v, values[train], test_v), 9),
                    "onehot_ridge_rho": np.round(direct_ridge(train_v, values[train], test_v, 3), 9)}
                for key, predicted in expected.items():
                    rho = spearmanr(predicted, values[test])[0] if np.ptp(predicted) > 0 else None
                    defined[scheme, key] += rho is not None
                    assert fold[key] == (None if rho is None else pytest.approx(rho, abs=1e-6)), (column, scheme, key)
                assert -1 <= fold["finetuned_rho"] <= 1 and len(fold["train_loss"]) == 1
            rhos = [f["blosum62_rho"] for f in entry["folds"]]
            assert entry["summary"]["blosum62"] == pytest.approx(
                {"mean": np.mean(rhos), "std": np.std(rhos), "folds": 2})
    # the random folds share positions between train and test: both fitted baselines have something to rank there
    assert defined["random", "position_mean_rho"] >= 2 and defined["random", "onehot_ridge_rho"] >= 2
    assert defined["modulo", "position_mean_rho"] == defined["contiguous", "position_mean_rho"] == 0  # unseen sites
    text = out_md.read_text()
    assert text.startswith("## DMS_score\n") and "\n## activity\n" in text
    assert sum(line.startswith(f"| {s} | mean ± sd |") for line in text.splitlines() for s in SCHEMES) == 6
    err = capsys.readouterr().err
    assert "synonymous 1" in err and "cross-validation rows of activity: rows 101, used 60" in err


def test_finetune_position_schemes_need_enough_positions(official_checkpoint, tmp_path, capsys):
    table = write_csv(tmp_path / "two_sites.csv", [{"mutant": f"{WT[i]}{i + 1}{aa}", "DMS_score": str(n)}
                                                  for n, (i, aa) in enumerate((i, aa) for i in (23, 24) for aa in AMINO
                                                                              if aa != WT[i])])
    argv = [str(official_checkpoint("esm1b", **TINY)), "--fasta", str(FASTA), "--table", str(table), "--folds", "3",
            "--fold-scheme", "random", "contiguous", "--json", str(tmp_path / "x.json"), "--markdown",
            str(tmp_path / "x.md")]
    assert run_main(finetune_variants.main, argv) == 2
    lines = error_lines(capsys.readouterr().err)
    assert lines == ["error: contiguous folds need at least 3 mutated positions; the variants mutate 2 — lower --folds "
                     "or drop the scheme from --fold-scheme"]
    assert not (tmp_path / "x.json").exists()


def test_finetune_error_names_the_offset_that_makes_every_letter_agree(official_checkpoint, dms_rows, tmp_path,
                                                                       capsys):
    """Positions numbered on the mature protein (from residue 24), the precursor given as the wild type."""
    mature = [{"mutant": f"{r['mutant'][0]}{int(r['mutant'][1:-1]) - 23}{r['mutant'][-1]}",
               "DMS_score": r["DMS_score"]} for r in dms_rows[:30]]
    table = write_csv(tmp_path / "mature.csv", mature)
    argv = [str(official_checkpoint("esm1b", **TINY)), "--fasta", str(FASTA), "--table", str(table),
            "--json", str(tmp_path / "x.json"), "--markdown", str(tmp_path / "x.md")]
    assert run_main(finetune_variants.main, argv) == 2
    err = capsys.readouterr().err
    hint = "--offset -22 would match the wild type at all 30 mutated positions: every wild-type letter agrees"
    assert f"hint: {hint}" in err and error_lines(err)[0].endswith(hint)
