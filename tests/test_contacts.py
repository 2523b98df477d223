"""fairseq-esm-contacts: predictions equal fair-esm's ``predict_contacts``; features + regression reproduce
the head; fitting finds a contact signal and round-trips through its file; precision by hand."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import esm
import numpy as np
import pytest
import torch
from helpers.proteins import write_fasta

from fairseq_esm.checkpoints import load_model
from fairseq_esm.checkpoints.pt_files import CheckpointError, regression_path
from fairseq_esm.cli.common import run_main
from fairseq_esm.cli.contacts import main
from fairseq_esm.evaluation.contact_figure import contact_figure
from fairseq_esm.inference.contacts import (
    Regression,
    attention_features,
    fit_regression,
    load_regression,
    predict,
    save_regression,
)
from fairseq_esm.io.structures import load_chain
from fairseq_esm.modules.contact_metrics import contact_precisions

STRUCTURES = Path(__file__).resolve().parents[1] / "examples" / "data" / "structures"
FIT_SET = ["1A8O.pdb.gz", "1LCD.pdb.gz", "1A7G.cif.gz", "4CUP.cif.gz"]


def spread_checkpoint(tmp_path: Path, official: Path) -> Path:
    """A copy of ``official`` whose regression sibling (written by us) spreads probabilities over (0, 1),
    so a 1e-4 agreement means something; fair-esm reads the sibling too."""
    checkpoint = tmp_path / "model.pt"
    shutil.copy(official, checkpoint)
    model, alphabet = load_model(official)
    features = attention_features(model, alphabet, "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAV")
    coef = torch.randn(features.shape[-1], generator=torch.Generator().manual_seed(0)) / features.std()
    save_regression(regression_path(checkpoint), Regression(coef.numpy(), -1.0))
    return checkpoint



def reference_contacts(checkpoint: Path, sequence: str) -> np.ndarray:
    model, alphabet = esm.pretrained.load_model_and_alphabet_local(str(checkpoint))
    _, _, tokens = alphabet.get_batch_converter()([("p", sequence)])
    with torch.no_grad():
        return model.eval().predict_contacts(tokens)[0].numpy()


@pytest.mark.parametrize("variant", ["esm1b", "esm1"])
def test_predict_matches_fair_esm(variant, official_checkpoint, sample_proteins, tmp_path, capsys) -> None:
    checkpoint = spread_checkpoint(tmp_path, official_checkpoint(variant))
    by_length = {len(p): p for p in sample_proteins if 20 <= len(p) <= 120}
    proteins = [by_length[n] for n in sorted(by_length)[::7][:4]] + [next(p for p in sample_proteins if len(p) > 200)]
    assert len({len(p) for p in proteins}) == 5
    fasta = write_fasta(tmp_path / "in.fasta", [(f"sp|Q{i}|TEST", p) for i, p in enumerate(proteins)])
    out = tmp_path / "out"
    argv = ["predict", str(checkpoint), str(fasta), "--out", str(out), "--device", "cpu", "--max-tokens", "1024"]
    assert main(argv) == 0
    assert "skipped too_long: 1" in capsys.readouterr().err  # longer than the 128-position test model
    index = [line.split("\t") for line in (out / "contacts.tsv").read_text().splitlines()[1:]]
    assert [row[0] for row in index] == [f"sp|Q{i}|TEST" for i in range(4)]
    spreads = []
    for (record_id, file_name, length), protein in zip(index, proteins):
        ours = np.load(out / file_name)
        assert file_name == record_id.replace("|", "_") + ".npy" and int(length) == len(protein)
        assert ours.dtype == np.float32 and ours.shape == (len(protein), len(protein))
        assert np.abs(ours - reference_contacts(checkpoint, protein)).max() <= 1e-4
        assert (out / file_name).with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        spreads.append(ours.std())
    assert min(spreads) > 0.05


@pytest.mark.parametrize("variant", ["esm1b", "esm1"])
def test_features_and_head_weights_reproduce_the_head(variant, official_checkpoint, sample_proteins) -> None:
    model, alphabet = load_model(official_checkpoint(variant))
    protein = next(p for p in sample_proteins if 40 <= len(p) <= 120)
    features = attention_features(model, alphabet, protein)
    assert features.shape == (len(protein), len(protein), 3 * 4)
    torch.testing.assert_close(features, features.transpose(0, 1), rtol=0, atol=1e-6)  # symmetrised
    linear = model.contact_head.regression
    by_hand = torch.sigmoid(features @ linear.weight[0].detach() + linear.bias.detach()).numpy()
    np.testing.assert_allclose(by_hand, predict(model, alphabet, protein), atol=1e-6)


def mean_precision(features, chains, regression: Regression, key: str) -> float:
    rows = [contact_precisions(f @ regression.coef + regression.intercept, c.contacts(), c.resolved)
            for f, c in zip(features, chains)]
    return float(np.nanmean([row[key] for row in rows]))


def test_fit_recovers_a_contact_signal_among_attention_heads(official_checkpoint) -> None:
    """A random tiny model's heads carry no contact signal; add one noisy distance feature (σ = 4 Å) and the
    L1 fit must find it: precision well above random, and above a fit on residue-shuffled contact maps."""
    model, alphabet = load_model(official_checkpoint("esm1b"))
    chains = [load_chain(STRUCTURES / name) for name in FIT_SET]
    rng = np.random.default_rng(0)
    features = []
    for chain in chains:
        noise = rng.normal(0.0, 4.0, (len(chain.sequence),) * 2)
        signal = np.nan_to_num(-chain.distances()) + (noise + noise.T) / 2
        heads = attention_features(model, alphabet, chain.sequence).numpy()
        features.append(np.concatenate([heads, signal[..., None]], axis=-1))
    masks = [c.resolved for c in chains]
    fitted = fit_regression(features, [c.contacts() for c in chains], masks)
    perms = [rng.permutation(len(c.sequence)) for c in chains]
    shuffled = fit_regression(features, [c.contacts()[p][:, p] for c, p in zip(chains, perms)], masks)
    scale = np.concatenate([f.reshape(-1, f.shape[-1]) for f in features]).std(axis=0)
    assert np.argmax(np.abs(fitted.coef * scale)) == features[0].shape[-1] - 1 and fitted.coef[-1] > 0
    true_long = mean_precision(features, chains, fitted, "long_P@L")
    random_long = np.mean([contact_precisions(np.zeros((len(c.sequence),) * 2), c.contacts(), c.resolved)
                           ["long_random"] for c in chains])
    assert true_long > 0.3 and true_long > 3 * random_long
    assert true_long > mean_precision(features, chains, shuffled, "long_P@L") + 0.1


def test_fit_cli_round_trips_through_its_files(official_checkpoint, sample_proteins, tmp_path, capsys) -> None:
    checkpoint = official_checkpoint("esm1b")
    regression, new_checkpoint = tmp_path / "fitted.pt", tmp_path / "refit_model.pt"
    structures = [str(STRUCTURES / name) for name in FIT_SET] + [str(STRUCTURES / "6WQA.cif.gz")]
    argv = ["fit", str(checkpoint), *structures, "--out", str(regression), "--write-checkpoint",
            str(new_checkpoint), "--device", "cpu"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "skipped 6WQA_A: 391 residues, the model takes at most 126" in captured.err
    assert "fitted on 4 chains" in captured.out and "mean (4)" in captured.out
    fitted = load_regression(regression)
    assert fitted.coef.shape == (12,) and fitted.intercept < 0  # contacts are rare
    assert fitted.info["structures"] == ["1A8O_A", "1LCD_A", "1A7G_E", "4CUP_A"] and fitted.info["C"] == 0.15
    assert set(torch.load(regression)["model"]) == {"contact_head.regression.weight", "contact_head.regression.bias"}
    model, _ = load_model(new_checkpoint)
    np.testing.assert_array_equal(model.contact_head.regression.weight[0].detach().numpy(), fitted.coef)
    fasta = write_fasta(tmp_path / "in.fasta", [("p1", next(p for p in sample_proteins if 50 <= len(p) <= 120))])
    outputs = {}
    for name, args in {"regression": [str(checkpoint), "--regression", str(regression)],
                       "checkpoint": [str(new_checkpoint)], "original": [str(checkpoint)]}.items():
        assert main(["predict", args[0], str(fasta), "--out", str(tmp_path / name), "--no-png", *args[1:]]) == 0
        outputs[name] = np.load(tmp_path / name / "p1.npy")
    assert not (tmp_path / "checkpoint" / "p1.png").exists()
    np.testing.assert_allclose(outputs["regression"], outputs["checkpoint"], atol=1e-6)
    assert np.abs(outputs["regression"] - outputs["original"]).max() > 0.01
    sequence = fasta.read_text().split("\n")[1]
    assert np.abs(outputs["checkpoint"] - reference_contacts(new_checkpoint, sequence)).max() <= 1e-4


def test_evaluate_prints_the_precision_table(official_checkpoint, tmp_path, capsys) -> None:
    checkpoint = official_checkpoint("esm1b")
    table = tmp_path / "table.tsv"
    specs = [str(STRUCTURES / "1A8O.pdb.gz"), str(STRUCTURES / "1LCD.pdb.gz") + ":A", str(STRUCTURES / "2BEG.pdb.gz")]
    assert main(["evaluate", str(checkpoint), *specs, "--out", str(table), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines == table.read_text().splitlines() and "warning" not in captured.err
    header = lines[0].split("\t")
    assert header[:3] == ["structure", "length", "resolved"] and "long_P@L/5" in header and len(lines) == 5
    model, alphabet = load_model(checkpoint)
    chain = load_chain(STRUCTURES / "2BEG.pdb.gz")
    expected = contact_precisions(predict(model, alphabet, chain.sequence), chain.contacts(), chain.resolved)
    row = dict(zip(header, lines[3].split("\t")))
    assert row["structure"] == "2BEG_A" and row["length"] == "42" and row["resolved"] == "26"
    assert all(row[key] == f"{value:.3f}" for key, value in expected.items())
    assert lines[4].startswith("mean (3)")


def test_uncalibrated_checkpoint_warns(official_checkpoint, tmp_path, capsys) -> None:
    bare = tmp_path / "bare.pt"
    shutil.copy(official_checkpoint("esm1b"), bare)  # no -contact-regression.pt beside it
    with pytest.warns(UserWarning, match="no contact regression weights"):
        assert main(["evaluate", str(bare), str(STRUCTURES / "1A8O.pdb.gz"), "--device", "cpu"]) == 0
    assert "no fitted contact regression" in capsys.readouterr().err


def test_precision_by_hand() -> None:
    probs, contacts = np.zeros((10, 10)), np.zeros((10, 10), dtype=bool)
    scores = {(0, 9): 0.95, (0, 6): 0.9, (1, 7): 0.8, (2, 8): 0.7, (3, 9): 0.6, (0, 7): 0.5, (0, 1): 1.0}
    for (i, j), p in scores.items():
        probs[i, j] = p
    for i, j in [(0, 9), (2, 8), (1, 8), (0, 1)]:  # (0, 1) is only 1 apart: never a candidate
        contacts[i, j] = contacts[j, i] = True
    every = contact_precisions(probs, contacts, np.ones(10, dtype=bool))
    # 10 short-range candidates (separation 6-9), 3 of them contacts; top 2 / top 5 / all 10
    short = (every["short_P@L/5"], every["short_P@L/2"], every["short_P@L"], every["short_random"])
    assert short == (0.5, 0.4, 0.3, 0.3)
    assert np.isnan(every["medium_P@L"]) and np.isnan(every["long_P@L"])  # no pair 12+ apart in 10 residues
    resolved = np.ones(10, dtype=bool)
    resolved[2] = False  # drops (2, 8) and (2, 9): 8 candidates, 2 contacts
    masked = contact_precisions(probs, contacts, resolved)
    assert (masked["short_P@L/5"], masked["short_P@L/2"], masked["short_P@L"]) == (0.5, 0.2, 0.25)


def test_precision_ranges_and_ties_by_hand() -> None:
    probs, contacts = np.zeros((30, 30)), np.zeros((30, 30), dtype=bool)
    probs[0, 29], probs[0, 12], probs[0, 6] = 0.9, 0.8, 0.7
    contacts[0, 29] = contacts[0, 6] = contacts[3, 27] = True
    result = contact_precisions(probs, contacts, np.ones(30, dtype=bool))
    # long: 21 candidates (separation 24-29), contacts (0, 29) and (3, 27); top 6 = (0, 29) then ties in
    # row-major order (0, 24) ... (0, 28); all 21 for L = 30
    assert result["long_P@L/5"] == pytest.approx(1 / 6) and result["long_P@L"] == pytest.approx(2 / 21)
    assert result["medium_P@L/5"] == 0.0 and result["short_P@L/5"] == pytest.approx(1 / 6)


def test_help_and_one_line_errors(official_checkpoint, tmp_path, capsys) -> None:
    script = Path(sys.executable).parent / "fairseq-esm-contacts"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "predict" in done.stdout and "evaluate" in done.stdout
    checkpoint = str(official_checkpoint("esm1b"))
    fasta = write_fasta(tmp_path / "in.fasta", [("p", "MKTAYIAKQRQISFVKSHFSRQ")])
    cases = {
        "no such file": ["evaluate", checkpoint, str(tmp_path / "missing.pdb")],
        "no protein chain 'B'": ["evaluate", checkpoint, str(STRUCTURES / "1LCD.pdb.gz") + ":B"],
        "nope.pt": ["predict", str(tmp_path / "nope.pt"), str(fasta), "--out", str(tmp_path / "out")],
        "absent.fasta": ["predict", checkpoint, str(tmp_path / "absent.fasta"), "--out", str(tmp_path / "out")],
        "contact regression file: ": ["predict", checkpoint, str(fasta), "--out", str(tmp_path / "o"),
                                      "--regression", str(fasta)],
        "pass --out": ["predict", checkpoint, str(fasta)],
        "give only --out": ["predict", checkpoint, str(fasta), str(tmp_path / "o"), "--out", str(tmp_path / "o")],
    }
    for expected, argv in cases.items():
        assert run_main(main, argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and expected in err[0], err


def test_unsafe_regression_file_keeps_the_allow_unsafe_advice(tmp_path) -> None:
    """The checkpoint reader's refusal (naming --allow-unsafe) survives, with the regression context added."""
    import datetime

    path = tmp_path / "unsafe-regression.pt"
    save_regression(path, Regression(np.linspace(-1, 1, 12, dtype=np.float32), -2.0))
    data = torch.load(path)
    data["fit"] = {"when": datetime.date(2024, 1, 1)}  # a Python object weights_only loading refuses
    torch.save(data, path)
    with pytest.raises(CheckpointError) as caught:
        load_regression(path)
    message = str(caught.value)
    assert message.startswith(f"contact regression file: {path} holds Python objects") and "--allow-unsafe" in message
    assert "expected a torch file holding" in message
    fitted = load_regression(path, allow_unsafe=True)
    assert fitted.intercept == -2.0 and fitted.info["when"] == datetime.date(2024, 1, 1)


def test_evaluate_draws_predicted_over_true(official_checkpoint, tmp_path, capsys) -> None:
    from PIL import Image

    checkpoint = spread_checkpoint(tmp_path, official_checkpoint("esm1b"))
    pngs = tmp_path / "pngs"
    argv = ["evaluate", str(checkpoint), str(STRUCTURES / "2BEG.pdb.gz"), "--png-dir", str(pngs), "--device", "cpu"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "wrote 1 contact-map PNGs" in captured.err
    with Image.open(pngs / "2BEG_A.png") as image:
        assert image.format == "PNG" and image.size == (550, 460)
    model, alphabet = load_model(checkpoint)
    chain = load_chain(STRUCTURES / "2BEG.pdb.gz")  # 42 residues, 26 resolved: masked pairs to draw
    probs, contacts, resolved = predict(model, alphabet, chain.sequence), chain.contacts(), chain.resolved
    drawn = contact_figure(probs, contacts, resolved)
    i, j = np.triu_indices(42, k=1)
    np.testing.assert_allclose(drawn.values[i, j], probs[i, j], rtol=0, atol=1e-6)  # upper: predicted
    lower = drawn.values[j, i]
    masked = ~(resolved[i] & resolved[j])
    assert np.isnan(lower[masked]).all() and masked.sum() > 100  # unresolved pairs shown as masked
    assert np.array_equal(lower[~masked], contacts[j, i][~masked]) and lower[~masked].sum() > 0  # lower: truth
    marked = np.concatenate([drawn.true_positives, drawn.false_positives])
    assert len(marked) == min(42, int(((j - i >= 24) & ~masked).sum())) and (marked[:, 1] - marked[:, 0] >= 24).all()
    assert contacts[tuple(drawn.true_positives.T)].all() and not contacts[tuple(drawn.false_positives.T)].any()
    row = dict(zip(*[line.split("\t") for line in captured.out.splitlines()[:2]]))
    assert row["long_P@L"] == f"{drawn.long_precision:.3f}"  # the title's number is the table's
