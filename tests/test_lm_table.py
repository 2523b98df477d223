"""fairseq-esm-lm-table: one table of held-out ECEs whose checkpoint rows equal fairseq-validate's."""

from __future__ import annotations

import json

import pytest
from helpers.proteins import read_proteins
from helpers.training import run, tiny_data, train_args

from fairseq_esm.cli import lm_table, ngram
from fairseq_esm.cli.common import run_main

TASK = ["--user-dir", "fairseq_esm", "--task", "protein_mlm", "--criterion", "esm_masked_lm", "--cpu"]


@pytest.fixture(scope="module")
def trained(fairseq_preprocess, sample_proteins, tmp_path_factory):
    """A tiny data-bin and an ESM-1b trained on it for 3 updates."""
    data = tiny_data(fairseq_preprocess, sample_proteins)
    save = tmp_path_factory.mktemp("lm_table_ckpt")
    run(["fairseq-train", *train_args(data, save, "--max-update", "3")])
    return data, save / "checkpoint_last.pt"


def validate_ppl(data, checkpoint, seed: int) -> float:
    """fairseq-validate's held-out ppl (= ECE) with the given mask seed."""
    out = run(["fairseq-validate", str(data), *TASK, "--path", str(checkpoint), "--valid-subset", "valid",
               "--seed", str(seed), "--max-positions", "64", "--max-tokens", "4096", "--log-format", "json"])
    line = [line for line in out.splitlines() if '"valid_ppl"' in line][-1]
    return float(json.loads(line[line.index("{"):])["valid_ppl"])


def test_rows_match_fairseq_validate_and_share_masks(trained, tmp_path, capsys):
    data, checkpoint = trained
    out = tmp_path / "table.json"
    argv = [str(data), "--subset", "valid", "--seed", "5", "--max-positions", "64", "--unigram",
            "--untrained", "untrained t4=esm1b_t4_1M", "--model", f"trained t4={checkpoint}",
            "--paper", "trained t4=10.45", "--json", str(out), "--markdown", str(tmp_path / "t.md")]
    assert run_main(lm_table.main, argv) == 0
    rows = {row["model"]: row for row in json.loads(out.read_text())["rows"]}
    trained_row, untrained_row = rows["trained t4"], rows["untrained t4"]
    assert trained_row["ECE"] == pytest.approx(validate_ppl(data, checkpoint, 5), abs=0.006)
    assert trained_row["paper ECE"] == "10.45" and untrained_row["paper ECE"] == ""
    masked = [row["targets"] for row in rows.values()]
    assert len(set(masked)) == 1 and masked[0] > 300  # same masks for every masked model
    assert trained_row["parameters"] == untrained_row["parameters"] > 800_000
    assert "| trained t4 | masked targets | " in (tmp_path / "t.md").read_text()
    assert run_main(lm_table.main, argv) == 0  # untrained init and masks are seeded: same table again
    assert json.loads(out.read_text())["rows"] == list(rows.values())


def test_usage_errors_are_one_line(trained, tmp_path, capsys):
    data, _ = trained
    assert run_main(lm_table.main, [str(data)]) == 2
    assert "nothing to score" in capsys.readouterr().err
    assert run_main(lm_table.main, [str(data), "--model", f"x={tmp_path / 'none.pt'}"]) == 2
    assert f"error: {tmp_path / 'none.pt'}: no such file — check the path" in capsys.readouterr().err
    fasta = tmp_path / "not_a_checkpoint.pt"
    fasta.write_text(">p\nMKV\n")
    assert run_main(lm_table.main, [str(data), "--model", f"x={fasta}"]) == 2
    assert f"error: {fasta} is not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert run_main(lm_table.main, [str(data), "--untrained", "x=no_such_arch"]) == 2
    assert "unknown --arch 'no_such_arch'; this plugin's: " in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert run_main(lm_table.main, [str(data), "--ngram-json", str(bad)]) == 2
    assert "not a fairseq-esm-ngram --json file" in capsys.readouterr().err


def test_ngram_sweep_becomes_a_row_with_the_papers_figure(trained, tmp_path, capsys):
    data, _ = trained
    fasta = tmp_path / "p.fasta"
    fasta.write_text("".join(f">p{i}\n{seq}\n" for i, seq in enumerate(read_proteins(60))))
    sweep = tmp_path / "ngram.json"
    assert run_main(ngram.main, ["--train", str(fasta), "--valid", str(fasta), "--heldout", str(fasta),
                                 "--contexts", "0,1", "--json", str(sweep)]) == 0
    out = tmp_path / "t.json"
    assert run_main(lm_table.main, [str(data), "--ngram-json", str(sweep), "--paper", "n-gram=17.18",
                                    "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    best = json.loads(sweep.read_text())["best"]
    assert row["model"].startswith(f"n-gram, context {best['k']}, ") and row["ECE"] == best["heldout_ece"]
    assert row["paper ECE"] == "17.18" and row["targets"] == sum(len(s) for s in read_proteins(60))
