"""fairseq-esm-variants on real TEM-1 beta-lactamase mutations (the shipped Stiffler 2015 slice):
every strategy against a direct fair-esm computation, the masked-marginal cache, offsets, and the
rows that must be reported rather than scored."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import esm
import pytest
import torch
from helpers.oracle import fair_esm_model, write_official
from scipy.stats import spearmanr

import fairseq_esm.checkpoints
from fairseq_esm.checkpoints import load_model
from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.variants import main, model_labels
from fairseq_esm.inference.variant_scoring import score_variants
from fairseq_esm.io.mutations import check_rows, mutant_sequence, parse_variant
from fairseq_esm.modules.batching import windows

DMS = Path(__file__).resolve().parents[1] / "examples" / "data" / "dms"
FASTA = DMS / "BLAT_ECOLX.fasta"
SLICE = DMS / "BLAT_ECOLX_Stiffler_2015_slice.csv"
WT = "".join(FASTA.read_text().splitlines()[1:])
FITS = dict(max_positions=320)  # 286 residues + <cls>/<eos> fit




@pytest.fixture(scope="module")
def codes(dms_rows) -> list[str]:
    """Five real single mutants across the protein and two doubles made of them."""
    singles = [dms_rows[i]["mutant"] for i in (0, 60, 130, 210, 300)]
    return singles + [f"{singles[0]}:{singles[2]}", f"{singles[3]}:{singles[1]}"]


def write_table(path: Path, rows: list[dict[str, str]], delimiter: str = ",", bom: bool = False) -> Path:
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]), delimiter=delimiter, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run(checkpoint: Path, table: Path, out: Path, *extra: str) -> int:
    """Run the CLI as the console script does (errors become one line and exit status 2)."""
    return run_main(main, [str(checkpoint), "--fasta", str(FASTA), "--table", str(table), "--out", str(out), *extra])


class FairEsm:
    """Direct computations with fair-esm's own model on the same file (one forward per request)."""

    def __init__(self, checkpoint: Path) -> None:
        self.model, self.alphabet = esm.pretrained.load_model_and_alphabet_local(str(checkpoint))
        self.model.eval()
        self.plls: dict[str, float] = {}

    @torch.no_grad()
    def log_probs(self, sequence: str, masked: tuple[int, ...] = ()) -> torch.Tensor:
        """(T, V) log-probabilities, residues ``masked`` (0-based) replaced by <mask>."""
        _, _, tokens = self.alphabet.get_batch_converter()([("x", sequence)])
        tokens[0, [i + 1 for i in masked]] = self.alphabet.mask_idx
        return torch.log_softmax(self.model(tokens)["logits"][0], -1)

    def ratio(self, lp: torch.Tensor, code: str, offset: int = 1) -> float:
        """sum of log p(mt) - log p(wt) at the code's positions of (T, V) log-probabilities."""
        idx = self.alphabet.get_idx
        return sum(float(lp[m.index + 1, idx(m.mt)] - lp[m.index + 1, idx(m.wt)]) for m in parse_variant(code, offset))

    @torch.no_grad()
    def pll(self, sequence: str) -> float:
        """All masked copies in one batch (same length, no padding): sum of log p(true residue)."""
        if sequence in self.plls:
            return self.plls[sequence]
        _, _, tokens = self.alphabet.get_batch_converter()([("x", sequence)])
        copies = tokens.repeat(len(sequence), 1)
        at = torch.arange(1, len(sequence) + 1)
        copies[at - 1, at] = self.alphabet.mask_idx
        lp = torch.log_softmax(self.model(copies)["logits"], -1)
        self.plls[sequence] = float(lp[at - 1, at, tokens[0, at]].double().sum())
        return self.plls[sequence]

    def score(self, strategy: str, code: str) -> float:
        variant = parse_variant(code)
        mutant = mutant_sequence(WT, variant)
        if strategy == "masked-marginal":
            return self.ratio(self.log_probs(WT, tuple(m.index for m in variant)), code)
        if strategy == "wt-marginal":
            return self.ratio(self.log_probs(WT), code)
        if strategy == "mutant-marginal":
            return self.ratio(self.log_probs(mutant), code)
        return self.pll(mutant) - self.pll(WT)


def test_marginal_strategies_equal_fair_esm(official_checkpoint, codes, tmp_path, capsys):
    checkpoint = official_checkpoint("esm1b", **FITS)
    table = write_table(tmp_path / "muts.csv", [{"mutant": c} for c in codes])
    strategies = ["masked-marginal", "wt-marginal", "mutant-marginal"]
    assert run(checkpoint, table, tmp_path / "out.csv", "--scoring-strategy", *strategies) == 0
    rows = read_table(tmp_path / "out.csv")
    assert list(rows[0]) == ["mutant", "masked_marginal", "wt_marginal", "mutant_marginal", "status", "note"]
    oracle = FairEsm(checkpoint)
    for row in rows:
        assert row["status"] == "ok"
        for strategy in strategies:
            expected = oracle.score(strategy, row["mutant"])
            assert float(row[strategy.replace("-", "_")]) == pytest.approx(expected, abs=1e-4), (strategy, row)
    err = capsys.readouterr().err
    assert "masked-marginal: 7 sequences through the model for 7 rows" in err  # 5 positions + 2 pairs
    assert "no DMS_score column" in err


def test_pseudo_likelihood_equals_fair_esm(official_checkpoint, codes):
    checkpoint = official_checkpoint("esm1b", layers=1, dim=32, ffn=64, **FITS)  # 286 masked copies per mutant
    model, alphabet = load_model(checkpoint)
    picked = [codes[0], codes[5]]  # a single and a double
    result = score_variants(model, alphabet, WT, [parse_variant(c) for c in picked], "pseudo-likelihood")
    oracle = FairEsm(checkpoint)
    assert result.scores == pytest.approx([oracle.score("pseudo-likelihood", c) for c in picked], abs=1e-4)
    assert result.forwards == 3 * len(WT)


def test_cached_masked_marginal_equals_uncached_with_one_forward_per_position(official_checkpoint, dms_rows, codes):
    model, alphabet = load_model(official_checkpoint("esm1b", **FITS))
    table = [r["mutant"] for r in dms_rows[:40]] + codes[5:]
    variants = [parse_variant(c) for c in table]
    cached = score_variants(model, alphabet, WT, variants, "masked-marginal", toks_per_batch=2000)
    alone = [score_variants(model, alphabet, WT, [v], "masked-marginal").scores[0] for v in variants]
    assert cached.scores == pytest.approx(alone, abs=1e-5)
    singles = {v[0].index for v in variants if len(v) == 1}
    assert cached.forwards == len(singles) + 2 < len(table)
    additive = score_variants(model, alphabet, WT, variants, "masked-marginal", multi="additive")
    assert additive.forwards == len(singles | {m.index for v in variants for m in v})
    assert additive.scores[:40] == pytest.approx(cached.scores[:40], abs=1e-5)  # singles: the same thing
    for code, score in zip(codes[5:], additive.scores[40:]):
        parts = score_variants(model, alphabet, WT, [parse_variant(p) for p in code.split(":")], "masked-marginal")
        assert score == pytest.approx(sum(parts.scores), abs=1e-5)


def test_offset_renumbers_positions(official_checkpoint, dms_rows, tmp_path, capsys):
    checkpoint = official_checkpoint("esm1b", **FITS)
    rows = dms_rows[:30]
    shifted = [{"mutant": f"{r['mutant'][0]}{int(r['mutant'][1:-1]) + 1000}{r['mutant'][-1]}",
                "DMS_score": r["DMS_score"]} for r in rows]
    assert run(checkpoint, write_table(tmp_path / "a.csv", rows), tmp_path / "a_out.csv") == 0
    assert run(checkpoint, write_table(tmp_path / "b.csv", shifted), tmp_path / "b_out.csv", "--offset", "1001") == 0
    plain, renumbered = read_table(tmp_path / "a_out.csv"), read_table(tmp_path / "b_out.csv")
    assert [r["masked_marginal"] for r in plain] == [r["masked_marginal"] for r in renumbered]
    assert all(r["status"] == "ok" for r in renumbered)
    capsys.readouterr()
    assert run(checkpoint, write_table(tmp_path / "b.csv", shifted), tmp_path / "c_out.csv") == 2  # nothing scorable
    err = capsys.readouterr().err
    assert "out_of_range" in err
    hint = "--offset 1001 would match the wild type at all 30 mutated positions: every wild-type letter agrees"
    assert f"hint: {hint}" in err  # in the report, and in the one error line
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path / 'b.csv'}: no row could be scored — see the report above; {hint}"]


def test_offset_with_the_mature_protein(official_checkpoint, dms_rows, tmp_path):
    """ProteinGym numbers the precursor; the mature protein starts at residue 24: --offset 24."""
    checkpoint = official_checkpoint("esm1b", **FITS)
    table = write_table(tmp_path / "t.csv", dms_rows[:20])
    out = tmp_path / "out.csv"
    argv = [str(checkpoint), "--sequence", WT[23:].lower(), "--table", str(table), "--out", str(out), "--offset", "24"]
    assert main(argv) == 0
    rows = read_table(out)
    assert all(r["status"] == "ok" for r in rows)
    oracle = FairEsm(checkpoint)
    for row in rows[:5]:
        m = parse_variant(row["mutant"], 24)[0]
        expected = oracle.ratio(oracle.log_probs(WT[23:], (m.index,)), row["mutant"], offset=24)
        assert float(row["masked_marginal"]) == pytest.approx(expected, abs=1e-4)


def test_wild_type_is_picked_by_id_from_a_multi_record_fasta(official_checkpoint, dms_rows, tmp_path, capsys):
    checkpoint = official_checkpoint("esm1b", **FITS)
    fasta = tmp_path / "two.fasta"
    fasta.write_text(f">other\nMKTAYIAKQR\n>BLAT\n{WT}\n")
    table = write_table(tmp_path / "t.csv", dms_rows[:5])
    argv = [str(checkpoint), "--fasta", str(fasta), "--table", str(table), "--out", str(tmp_path / "o.csv")]
    assert run_main(main, argv) == 2
    assert "2 records; the wild type must be exactly one (pass --wt-id)" in capsys.readouterr().err
    assert main(argv + ["--wt-id", "BLAT"]) == 0
    assert run(checkpoint, table, tmp_path / "ref.csv") == 0
    assert read_table(tmp_path / "o.csv") == read_table(tmp_path / "ref.csv")


def test_bad_rows_are_reported_counted_and_not_scored(official_checkpoint, tmp_path, capsys):
    checkpoint = official_checkpoint("esm1b", **FITS)
    codes = ["H24C", "A24", "24G", "AXG", "A0G", "H999A", "K24G", "H24C", "P25V:H24C", "H24C:P25V", "H24C:H24A",
             "H24*", "", "P25V"]
    table = write_table(tmp_path / "t.csv", [{"mutant": c, "DMS_score": str(i)} for i, c in enumerate(codes)])
    out, rejected = tmp_path / "out.csv", tmp_path / "rejected.csv"
    assert run(checkpoint, table, out, "--rejected", str(rejected)) == 0
    err = capsys.readouterr().err
    assert ("mutation table: 14 rows, 5 scored, ok 3, duplicate 2, malformed 6, out_of_range 2, wt_mismatch 1, "
            "beyond_context 0") in err
    assert "row 7 'K24G': K24G: the sequence has H at position 24, not K" in err
    rows = read_table(out)
    assert [r["mutant"] for r in rows] == codes  # every row, in order
    expected_status = ["ok", "malformed", "malformed", "malformed", "out_of_range", "out_of_range", "wt_mismatch",
                       "duplicate", "ok", "duplicate", "malformed", "malformed", "malformed", "ok"]
    assert [r["status"] for r in rows] == expected_status
    assert [r["masked_marginal"] != "" for r in rows] == [s in ("ok", "duplicate") for s in expected_status]
    assert rows[7]["masked_marginal"] == rows[0]["masked_marginal"] and rows[7]["note"] == "same mutations as row 1"
    listed = read_table(rejected)
    assert [(r["row"], r["status"]) for r in listed] == [
        (str(i), s) for i, s in enumerate(expected_status, start=1) if s != "ok"]


def test_table_with_nothing_scorable_is_an_error(official_checkpoint, tmp_path, capsys):
    table = write_table(tmp_path / "t.csv", [{"mutant": "K24G"}, {"mutant": "A24"}])
    assert run(official_checkpoint("esm1b", **FITS), table, tmp_path / "o.csv") == 2
    assert "no row could be scored" in capsys.readouterr().err


def test_spearman_is_printed_and_correct(official_checkpoint, dms_rows, tmp_path, capsys):
    checkpoint = official_checkpoint("esm1b", **FITS)
    rows = dms_rows[:60] + [{"mutant": "H24C", "DMS_score": ""}]  # a duplicate without a measurement
    assert run(checkpoint, write_table(tmp_path / "t.csv", rows), tmp_path / "o.csv",
               "--scoring-strategy", "masked-marginal", "wt-marginal") == 0
    err = capsys.readouterr().err
    out = read_table(tmp_path / "o.csv")
    for strategy in ("masked_marginal", "wt_marginal"):
        rho, p = spearmanr([float(r[strategy]) for r in out[:60]], [float(r["DMS_score"]) for r in out[:60]])
        assert (f"Spearman rho {strategy.replace('_', '-')} vs DMS_score: {rho:.4f} (p={p:.2g}; "
                "n=60 scored rows; 1 scored rows without a numeric DMS_score)") in err


def test_missing_columns_are_one_line_errors(official_checkpoint, dms_rows, tmp_path, capsys):
    checkpoint = official_checkpoint("esm1b", **FITS)
    table = write_table(tmp_path / "t.csv", dms_rows[:5])
    base = [str(checkpoint), "--fasta", str(FASTA), "--table", str(table), "--out", str(tmp_path / "o.csv")]
    for extra, column in [(["--mutation-col", "variant"], "variant"), (["--score-col", "fitness"], "fitness")]:
        assert run_main(main, base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and repr(column) in err[0]
    assert not (tmp_path / "o.csv").exists()


def test_tsv_with_bom_and_a_sniffed_delimiter(official_checkpoint, dms_rows, tmp_path):
    checkpoint = official_checkpoint("esm1b", **FITS)
    reference = tmp_path / "ref.csv"
    assert run(checkpoint, write_table(tmp_path / "t.csv", dms_rows[:8]), reference) == 0
    for name in ("t.tsv", "t.txt"):  # by extension, then by sniffing the header line
        table = write_table(tmp_path / name, dms_rows[:8], delimiter="\t", bom=True)
        assert run(checkpoint, table, tmp_path / "o.csv") == 0
        assert read_table(tmp_path / "o.csv") == read_table(reference)


def test_long_wild_type_uses_windows(official_checkpoint, codes):
    """A 128-position model sees BLAT (286 residues) in windows of 126: a masked residue in the window
    centred on it, an unmasked read in the half-overlapping window where it is most central. A double
    further apart than the context cannot be masked jointly and is reported; additive scores it."""
    checkpoint = official_checkpoint("esm1b")
    model, alphabet = load_model(checkpoint)
    checks, report = check_rows(["H24C:W286A", codes[0]], WT, max_span=126)
    assert [c.status for c in checks] == ["beyond_context", "ok"] and report.counts["beyond_context"] == 1
    far = parse_variant("H24C:W286A")
    oracle = FairEsm(checkpoint)

    def delta(lp: torch.Tensor, i: int, m) -> float:
        return float(lp[i + 1, oracle.alphabet.get_idx(m.mt)] - lp[i + 1, oracle.alphabet.get_idx(m.wt)])

    expected_additive = expected_wt = 0.0
    for m in far:
        start = min(max(m.index - 63, 0), len(WT) - 126)
        expected_additive += delta(oracle.log_probs(WT[start : start + 126], (m.index - start,)), m.index - start, m)
        start, end = max(windows(len(WT), 126, 63), key=lambda s: min(m.index - s[0], s[1] - 1 - m.index))
        expected_wt += delta(oracle.log_probs(WT[start:end]), m.index - start, m)
    additive = score_variants(model, alphabet, WT, [far], "masked-marginal", multi="additive")
    assert additive.scores[0] == pytest.approx(expected_additive, abs=1e-4)
    wt_marginal = score_variants(model, alphabet, WT, [far], "wt-marginal")
    assert wt_marginal.scores[0] == pytest.approx(expected_wt, abs=1e-4) and wt_marginal.forwards == 2
    with pytest.raises(ValueError, match="span more than"):
        score_variants(model, alphabet, WT, [far], "masked-marginal")


def test_help_of_the_console_script_exits_0():
    script = Path(sys.executable).with_name("fairseq-esm-variants")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--scoring-strategy" in result.stdout


# ESM-1v: several checkpoints, per-model columns and the ensemble mean

ESM1V = [f"esm1v_t4_test_{i}" for i in (1, 2, 3)]
#: fair-esm's loader notes that ESM-1v ships no contact regression; variant scores do not use it
NO_REGRESSION = pytest.mark.filterwarnings("ignore:Regression weights not found")


@pytest.fixture(scope="module")
def esm1v_files(tmp_path_factory) -> list[Path]:
    """Three random ESM-1b-architecture models saved as ESM-1v releases are: official layout, esm1v names, no
    contact-regression sibling (fair-esm expects none for esm1v)."""
    folder = tmp_path_factory.mktemp("esm1v")
    files = []
    for seed, name in enumerate(ESM1V, start=1):
        path = write_official(fair_esm_model("esm1b", seed=seed, **FITS), folder / f"{name}.pt")
        path.with_name(f"{name}-contact-regression.pt").unlink()
        files.append(path)
    return files


def run_models(checkpoints: list[Path], table: Path, out: Path, *extra: str) -> int:
    """The CLI with several checkpoints."""
    argv = [*map(str, checkpoints), "--fasta", str(FASTA), "--table", str(table), "--out", str(out), *extra]
    return run_main(main, argv)


@NO_REGRESSION
def test_ensemble_has_each_model_alone_and_their_mean(esm1v_files, dms_rows, tmp_path, capsys):
    table = write_table(tmp_path / "t.csv", dms_rows[:40])
    strategies = ("--scoring-strategy", "masked-marginal", "wt-marginal")
    assert run_models(esm1v_files, table, tmp_path / "ensemble.csv", *strategies) == 0
    err = capsys.readouterr().err
    rows = read_table(tmp_path / "ensemble.csv")
    assert list(rows[0]) == ["mutant", "DMS_score", "masked_marginal", *[f"masked_marginal_{n}" for n in ESM1V],
                             "wt_marginal", *[f"wt_marginal_{n}" for n in ESM1V], "status", "note"]
    assert all(r["status"] == "ok" for r in rows)
    for path, name in zip(esm1v_files, ESM1V):
        assert run(path, table, tmp_path / f"{name}.csv", *strategies) == 0
        alone = read_table(tmp_path / f"{name}.csv")
        for strategy in ("masked_marginal", "wt_marginal"):
            assert [r[f"{strategy}_{name}"] for r in rows] == [r[strategy] for r in alone], (name, strategy)
    measured = [float(r["DMS_score"]) for r in rows]
    for strategy in ("masked_marginal", "wt_marginal"):
        for row in rows:
            mean = math.fsum(float(row[f"{strategy}_{n}"]) for n in ESM1V) / len(ESM1V)
            assert abs(float(row[strategy]) - mean) <= 1e-6 + 1e-12, (strategy, row)
        for column, label in [(f"{strategy}_{n}", n) for n in ESM1V] + [(strategy, "mean of 3 models")]:
            rho, p = spearmanr([float(r[column]) for r in rows], measured)
            assert (f"Spearman rho {strategy.replace('_', '-')} ({label}) vs DMS_score: {rho:.4f} (p={p:.2g}; "
                    "n=40 scored rows; 0 scored rows without a numeric DMS_score)") in err
    assert [line for line in err.splitlines() if line.startswith("model ")] == [
        f"model {i} of 3: {path} (columns *_{name})" for i, (path, name) in enumerate(zip(esm1v_files, ESM1V), 1)]


@NO_REGRESSION
def test_esm1v_files_load_and_score_as_fair_esm(esm1v_files, dms_rows, tmp_path):
    """Parity with fair-esm's own loader and predict.py's masked marginal, model by model."""
    codes = [dms_rows[i]["mutant"] for i in (0, 9, 17, 26, 39)]
    with warnings.catch_warnings():  # ESM-1v ships no contact regression, and no warning says it is missing
        warnings.filterwarnings("error", message=".*no contact regression")
        load_model(esm1v_files[0])
    table = write_table(tmp_path / "t.csv", [{"mutant": c} for c in codes])
    assert run_models(esm1v_files, table, tmp_path / "out.csv") == 0
    rows = read_table(tmp_path / "out.csv")
    for path, name in zip(esm1v_files, ESM1V):
        oracle = FairEsm(path)  # esm.pretrained.load_model_and_alphabet_local: no regression file for esm1v
        for row in rows:
            expected = oracle.score("masked-marginal", row["mutant"])
            assert float(row[f"masked_marginal_{name}"]) == pytest.approx(expected, abs=1e-4), (name, row)


@NO_REGRESSION
def test_models_are_loaded_one_at_a_time(esm1v_files, dms_rows, tmp_path, monkeypatch):
    loaded: list[weakref.ref] = []
    real = fairseq_esm.checkpoints.load_model

    def load_one(*args, **kwargs):
        assert all(ref() is None for ref in loaded), "the previous model is still in memory"
        model, alphabet = real(*args, **kwargs)
        loaded.append(weakref.ref(model))
        return model, alphabet

    monkeypatch.setattr(fairseq_esm.checkpoints, "load_model", load_one)
    table = write_table(tmp_path / "t.csv", dms_rows[:5])
    assert run_models(esm1v_files, table, tmp_path / "out.csv") == 0
    assert len(loaded) == 3


@NO_REGRESSION
def test_repeated_stems_get_unique_columns(esm1v_files, dms_rows, tmp_path):
    copy = tmp_path / "other" / esm1v_files[0].name
    copy.parent.mkdir()
    copy.write_bytes(esm1v_files[0].read_bytes())
    assert model_labels([str(esm1v_files[0]), str(copy), str(esm1v_files[1])]) == [ESM1V[0], f"{ESM1V[0]}_2", ESM1V[1]]
    table = write_table(tmp_path / "t.csv", dms_rows[:5])
    assert run_models([esm1v_files[0], copy], table, tmp_path / "out.csv") == 0
    rows = read_table(tmp_path / "out.csv")
    assert list(rows[0])[2:5] == ["masked_marginal", f"masked_marginal_{ESM1V[0]}", f"masked_marginal_{ESM1V[0]}_2"]
    assert all(r["masked_marginal"] == r[f"masked_marginal_{ESM1V[0]}"] == r[f"masked_marginal_{ESM1V[0]}_2"]
               for r in rows)


def test_models_of_different_generations_are_one_error_line(official_checkpoint, esm1v_files, dms_rows, tmp_path,
                                                              capsys):
    esm1 = official_checkpoint("esm1", **FITS)
    table = write_table(tmp_path / "t.csv", dms_rows[:5])
    for checkpoints in ([esm1v_files[0], esm1], [esm1, esm1v_files[0], esm1v_files[1]]):
        assert run_models(checkpoints, table, tmp_path / "out.csv") == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "must share one alphabet" in errors[0], errors
        assert errors[0].startswith(f"error: {checkpoints[1]} is an ") and str(esm1) in errors[0]
        assert "(alphabet esm1)" in errors[0] and "(alphabet esm1b)" in errors[0]
        assert not (tmp_path / "out.csv").exists()
    clash = write_table(tmp_path / "clash.csv", [{**r, f"masked_marginal_{ESM1V[1]}": "1"} for r in dms_rows[:5]])
    assert run_models(esm1v_files, clash, tmp_path / "out.csv") == 2
    assert f"already has column(s) masked_marginal_{ESM1V[1]}" in capsys.readouterr().err
