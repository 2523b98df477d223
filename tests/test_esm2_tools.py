"""Every downstream tool on ESM-2 checkpoints: an official release file (``cfg`` layout, rotary positions, no
position table) and a fairseq checkpoint of the same weights whose config says ``max_positions`` 64, so proteins
longer than 62 residues go through each tool's windows. fair-esm's own ESM2 class, reading the official file,
is the oracle wherever it has the same computation."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from esm.pretrained import load_model_and_alphabet_local
from fairseq import checkpoint_utils
from helpers.proteins import write_fasta

from fairseq_esm.checkpoints import load_model
from fairseq_esm.checkpoints.pt_files import CheckpointError, read_file, regression_path
from fairseq_esm.cli import contacts, convert, extract, homology, probes, score, structure_dataset
from fairseq_esm.cli.common import run_main
from fairseq_esm.data.binarize import write_data_dictionary
from fairseq_esm.data.masking import masking_scheme
from fairseq_esm.inference.contacts import Regression, attention_features, load_regression, save_regression
from fairseq_esm.models.netsurf_ss8 import NetsurfConfig, NetsurfSS8Model
from fairseq_esm.modules.batching import centred_window, windows
from fairseq_esm.tasks.fairseq_checkpoint import save_fairseq_checkpoint
from fairseq_esm.tasks.fairseq_training import run_fairseq_train
from fairseq_esm.tasks.protein_mlm import held_out_masking
from fairseq_esm.tasks.protein_ss8 import SecondaryStructureTask, StructureTaskConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"
STRUCTURES = DATA / "structures"
SCOPE = DATA / "scope" / "astral-scopedom-seqres-gd-sel-gs-bib-40-2.07.fa.gz"
LAYERS, DIM = 2, 32
SHORT_WINDOW = 64  # max_positions of the fairseq checkpoint: 62 residues per forward pass
CHECKPOINTS = ["official", "fairseq64"]

# fairseq's namespace -> omegaconf conversions trip Hydra deprecation warnings
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def esm2(official_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """``official``: a random fair-esm ESM2 (2 layers, width 32, 4 heads) in the release layout, with a contact
    regression that spreads probabilities over (0, 1); ``fairseq64``: the same weights as a fairseq checkpoint
    whose config says max_positions 64 (rotary positions: only the window size changes)."""
    source = official_checkpoint("esm2", layers=LAYERS, dim=DIM, heads=4)
    work = tmp_path_factory.mktemp("esm2")
    official = work / "esm2_t2_tiny.pt"  # fair-esm reads a file as ESM-2 only under a name starting with esm2
    shutil.copy(source, official)
    model, alphabet = load_model(source)
    features = attention_features(model, alphabet, "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAV")
    coef = torch.randn(features.shape[-1], generator=torch.Generator().manual_seed(0)) / features.std()
    save_regression(regression_path(official), Regression(coef.numpy(), -1.0))
    model, _ = load_model(official)
    assert model.generation.name == "esm2" and model.embed_positions is None and model.max_positions() == 1024
    model.cfg = dataclasses.replace(model.cfg, max_positions=SHORT_WINDOW)
    return {"official": official, "fairseq64": save_fairseq_checkpoint(model, work / "checkpoint_esm2_64.pt")}


@pytest.fixture(scope="module")
def proteins(sample_proteins) -> dict[str, str]:
    """Real proteins: two that fit 62 residues and one of 150-250 residues (three windows of the 64 model)."""
    short = [p for p in sample_proteins if 20 <= len(p) <= 60]
    return {"short": short[0], "short2": short[1], "long": next(p for p in sample_proteins if 150 <= len(p) <= 250)}


def budget_of(which: str) -> int:
    """Residues per forward pass of the ``which`` checkpoint."""
    return (SHORT_WINDOW if which == "fairseq64" else 1024) - 2


def fair_esm(esm2: dict[str, Path]):
    """fair-esm's ESM2 reading the official file (same weights as the fairseq checkpoint)."""
    model, alphabet = load_model_and_alphabet_local(str(esm2["official"]))
    assert type(model).__name__ == "ESM2"
    return model.eval(), alphabet


def fair_esm_tokens(alphabet, sequence: str) -> torch.Tensor:
    return alphabet.get_batch_converter()([("p", sequence)])[2]


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


# ---------------------------------------------------------------- fairseq-esm-extract


@pytest.mark.parametrize("which", CHECKPOINTS)
def test_extract_means_and_windows(which, esm2, proteins, tmp_path, capsys):
    checkpoint, out = esm2[which], tmp_path / "out"
    fasta = write_fasta(tmp_path / "in.fasta", list(proteins.items()))
    assert run_main(extract.main, [str(checkpoint), str(fasta), "--out", str(out), "--repr-layers", "0", "1", "-1",
                                   "--include", "mean", "per_tok", "bos", "contacts"]) == 0
    err = capsys.readouterr().err
    rows = [line.split("\t") for line in (out / "index.tsv").read_text().splitlines()[1:]]
    results = {rid: torch.load(out / name) for rid, name, *_ in rows}
    model, alphabet = load_model(checkpoint)
    layers = [0, 1, LAYERS]
    with torch.no_grad():  # one short protein: the mean of the model's own representations over its residues
        direct = model(alphabet.tokenize(proteins["short"])[None], repr_layers=layers)["representations"]
    for layer in layers:
        mean = results["short"]["mean_representations"][layer]
        assert mean.shape == (DIM,)
        assert (mean - direct[layer][0, 1:-1].mean(0)).abs().max() <= 1e-5
    if which == "official":  # and fair-esm's ESM2 agrees
        theirs, their_alphabet = fair_esm(esm2)
        with torch.no_grad():
            reps = theirs(fair_esm_tokens(their_alphabet, proteins["short"]), repr_layers=layers)["representations"]
        for layer in layers:
            assert (results["short"]["representations"][layer] - reps[layer][0, 1:-1]).abs().max() <= 1e-4
    seq, budget = proteins["long"], budget_of(which)
    spans = windows(len(seq), budget, budget // 4)
    assert len(spans) == (3 if which == "fairseq64" else 1)
    assert f"windowed {int(len(spans) > 1)}, truncated 0" in err
    with torch.no_grad():
        direct = [model(alphabet.tokenize(seq[s:e])[None], repr_layers=layers) for s, e in spans]
    long = results["long"]
    for layer in layers:
        per_tok = long["representations"][layer]
        assert per_tok.shape == (len(seq), DIM)
        for position in range(len(seq)):
            covering = [w for w, (s, e) in enumerate(spans) if s <= position < e]
            expected = torch.stack([direct[w]["representations"][layer][0, 1 + position - spans[w][0]]
                                    for w in covering]).mean(0)
            assert (per_tok[position] - expected).abs().max() <= 1e-5
        assert (long["mean_representations"][layer] - per_tok.mean(0)).abs().max() <= 1e-5
        assert (long["bos_representations"][layer] - direct[0]["representations"][layer][0, 0]).abs().max() <= 1e-5
    assert long["contacts"].shape == (len(seq), len(seq))
    first, last = spans[0], spans[-1]
    assert torch.isnan(long["contacts"][0, len(seq) - 1]) == (last[0] >= first[1])  # no window holds both ends


# ---------------------------------------------------------------- fairseq-esm-score


@pytest.mark.parametrize("which", CHECKPOINTS)
def test_score_equals_masked_fair_esm(which, esm2, proteins, tmp_path, capsys):
    """PLL: fair-esm on the official file, one residue masked at a time (in the window centred on it when the
    protein is longer than the checkpoint's context); ECE: fair-esm on protein_mlm's seeded held-out masking."""
    chosen = ["short", "long"]
    out = tmp_path / "scores.tsv"
    fasta = write_fasta(tmp_path / "in.fasta", [(name, proteins[name]) for name in chosen])
    assert run_main(score.main, [str(esm2[which]), str(fasta), "--out", str(out), "--metrics", "pll", "ece",
                                 "--seed", "3", "--max-tokens", "2048"]) == 0
    err = capsys.readouterr().err
    assert ("1 longer than the model's context (62 residues)" in err) == (which == "fairseq64")
    rows = {row["id"]: row for row in read_tsv(out)}
    model, alphabet = fair_esm(esm2)
    ours = load_model(esm2[which])[1]
    budget, scheme = budget_of(which), masking_scheme(ours)
    for index, name in enumerate(chosen):
        seq, row = proteins[name], rows[name]
        pll = 0.0
        for i in range(len(seq)):
            start, end = centred_window(i, i, len(seq), budget)
            tokens = fair_esm_tokens(alphabet, seq[start:end])
            at = 1 + i - start
            true = int(tokens[0, at])
            tokens[0, at] = alphabet.mask_idx
            with torch.no_grad():
                pll += float(torch.log_softmax(model(tokens)["logits"][0, at], -1)[true])
        assert float(row["pll"]) == pytest.approx(pll, abs=1e-4 * len(seq))
        assert float(row["pseudo_perplexity"]) == pytest.approx(math.exp(-pll / len(seq)), rel=1e-4)
        source, target = held_out_masking(ours, seq, index, 3, scheme, budget)
        chosen_at = torch.from_numpy(target != alphabet.padding_idx)
        with torch.no_grad():
            log_probs = torch.log_softmax(model(torch.from_numpy(source)[None])["logits"][0], -1)
        ce = -float(log_probs[chosen_at].gather(1, torch.from_numpy(target)[chosen_at][:, None]).sum())
        assert int(row["n_masked"]) == int(chosen_at.sum()) > 0
        assert float(row["ece"]) == pytest.approx(math.exp(ce / int(chosen_at.sum())), rel=1e-4)


# ---------------------------------------------------------------- fairseq-esm-contacts


@pytest.mark.parametrize("which", CHECKPOINTS)
def test_contacts_predict_equals_predict_contacts(which, esm2, proteins, tmp_path, capsys):
    out = tmp_path / "out"
    fasta = write_fasta(tmp_path / "in.fasta", list(proteins.items()))
    assert run_main(contacts.main, ["predict", str(esm2[which]), str(fasta), "--out", str(out), "--no-png",
                                    "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    index = {row[0]: row[1] for row in (line.split("\t") for line in (out / "contacts.tsv").read_text().splitlines())}
    expected = ["short", "short2"] if which == "fairseq64" else ["short", "short2", "long"]
    assert sorted(index) == sorted(["id", *expected])
    assert ("skipped too_long: 1" in err) == (which == "fairseq64")  # as for ESM-1b: no map longer than a window
    model, alphabet = load_model(esm2[which])
    theirs, their_alphabet = fair_esm(esm2)
    for name in expected:
        ours = np.load(out / index[name])
        with torch.no_grad():
            direct = model.predict_contacts(alphabet.tokenize(proteins[name])[None])[0].numpy()
            reference = theirs.predict_contacts(fair_esm_tokens(their_alphabet, proteins[name]))[0].numpy()
        assert ours.shape == (len(proteins[name]),) * 2
        assert np.abs(ours - direct).max() <= 1e-5
        assert np.abs(ours - reference).max() <= 1e-4
        assert ours.std() > 0.05  # the spread regression: agreement means something


def test_contacts_fit_writes_an_esm2_file_fair_esm_reads(esm2, tmp_path, capsys):
    structures = [str(STRUCTURES / name) for name in ("1A8O.pdb.gz", "1LCD.pdb.gz")]
    regression, written = tmp_path / "regression.pt", tmp_path / "esm2_fitted.pt"
    # fair-esm would read "fitted.pt" as ESM-1b: refused before anything is fitted
    assert run_main(contacts.main, ["fit", str(esm2["official"]), *structures, "--out", str(regression),
                                    "--write-checkpoint", str(tmp_path / "fitted.pt")]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "must start with esm2" in errors[0] and not regression.exists()
    assert run_main(contacts.main, ["fit", str(esm2["official"]), *structures, "--out", str(regression),
                                    "--write-checkpoint", str(written)]) == 0
    fitted = load_regression(regression)
    assert fitted.coef.shape == (LAYERS * 4,)
    theirs, _ = load_model_and_alphabet_local(str(written))
    assert type(theirs).__name__ == "ESM2"
    assert np.array_equal(theirs.contact_head.regression.weight.detach().numpy()[0], fitted.coef)
    capsys.readouterr()
    assert run_main(contacts.main, ["evaluate", str(written), *structures, "--out", str(tmp_path / "t.tsv")]) == 0
    table = (tmp_path / "t.tsv").read_text().splitlines()
    assert table[0].startswith("structure\tlength") and table[-1].startswith("mean (2)")


# ---------------------------------------------------------------- fairseq-esm-convert


def state_of(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a .pt file (a regression sibling's merged in)."""
    state = dict(read_file(path)["model"])
    if regression_path(path).is_file():
        state.update(read_file(regression_path(path))["model"])
    return state


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_convert_official_fairseq_official_is_bit_identical(esm2, proteins, tmp_path, capsys):
    source, fairseq_path, back = esm2["official"], tmp_path / "checkpoint_esm2.pt", tmp_path / "esm2_back.pt"
    for argv in ([source, "--out", fairseq_path, "--to", "fairseq"], [fairseq_path, "--out", back, "--to", "official"]):
        assert run_main(convert.main, [str(a) for a in argv]) == 0
        assert "SRC vs reloaded DST on 3 proteins" in capsys.readouterr().out
    assert_same_state(state_of(back), state_of(source))
    stored = read_file(fairseq_path)
    assert stored["cfg"]["model"]["_name"] == "esm2" and stored["cfg"]["task"]["alphabet"] == "esm1b"
    assert stored["cfg"]["model"]["max_positions"] == 1024 and stored["cfg"]["model"]["token_dropout"] is True
    original, alphabet = load_model_and_alphabet_local(str(source))
    again, _ = load_model_and_alphabet_local(str(back))
    assert type(again).__name__ == "ESM2"
    assert_same_state(again.state_dict(), original.state_dict())
    tokens = alphabet.get_batch_converter()([("a", proteins["short"]), ("b", proteins["long"])])[2]
    tokens[0, 3] = alphabet.mask_idx
    # what fairseq-validate --path / --finetune-from-model do with the fairseq checkpoint
    data = tmp_path / "data-bin"
    data.mkdir()
    write_data_dictionary(data)
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(fairseq_path)],
                                                                       arg_overrides={"data": str(data)})
    assert cfg.model._name == "esm2" and task.alphabet.name == "esm1b"
    with torch.no_grad():
        reference = original.eval()(tokens)["logits"]
        assert torch.equal(again.eval()(tokens)["logits"], reference)
        assert (models[0].eval()(tokens)["logits"] - reference).abs().max() <= 1e-5


def test_convert_fairseq_official_fairseq_keeps_the_window(esm2, tmp_path, capsys):
    source, official, back = esm2["fairseq64"], tmp_path / "esm2_64.pt", tmp_path / "checkpoint_back.pt"
    assert run_main(convert.main, [str(source), "--out", str(tmp_path / "model.pt"), "--to", "official"]) == 2
    assert "must start with esm2" in error_lines(capsys.readouterr().err)[0]
    for argv in ([source, "--out", official, "--to", "official"], [official, "--out", back, "--to", "fairseq"]):
        assert run_main(convert.main, [str(a) for a in argv]) == 0
    assert_same_state(state_of(back), state_of(source))
    assert read_file(back)["cfg"]["model"]["max_positions"] == SHORT_WINDOW
    assert load_model(official)[0].max_positions() == SHORT_WINDOW
    assert type(load_model_and_alphabet_local(str(official))[0]).__name__ == "ESM2"


# ---------------------------------------------------------------- fairseq-esm-probes, fairseq-esm-homology


def test_probes_cli(esm2, tmp_path):
    out_json, out_md = tmp_path / "probes.json", tmp_path / "probes.md"
    argv = [str(esm2["official"]), "--labels", str(DATA / "probes" / "labels"), "--assignments",
            str(DATA / "probes" / "assignments.tsv"), "--levels", "fold", "--folds", "3", "--epochs", "1",
            "--no-progress", "--json", str(out_json), "--markdown", str(out_md)]
    assert run_main(probes.main, argv) == 0
    rows = json.loads(out_json.read_text())["rows"]
    assert [row["model"] for row in rows[:1]] == [esm2["official"].name] and rows[0]["dim"] == DIM
    fold = rows[0]["levels"]["fold"]
    assert len(fold["ss8_accuracy"]["partitions"]) == 3 and 0 < fold["ss8_accuracy"]["mean"] <= 1
    assert f"| {esm2['official'].name} |" in out_md.read_text()


def test_homology_cli_windows_long_domains(esm2, tmp_path):
    """The 64-position checkpoint: every domain longer than 62 residues is embedded in windows."""
    records = gzip.decompress(SCOPE.read_bytes()).decode().split("\n>")[:240]
    fasta = tmp_path / "slice.fa"
    fasta.write_text("\n>".join(records) + "\n")
    out_json, out_md = tmp_path / "rh.json", tmp_path / "rh.md"
    argv = [str(esm2["fairseq64"]), "--fasta", str(fasta), "--max-domains", "150", "--seed", "5", "--untrained",
            "--max-tokens", "2048", "--no-progress", "--json", str(out_json), "--markdown", str(out_md)]
    assert run_main(homology.main, argv) == 0
    report = json.loads(out_json.read_text())
    rows = report["rows"]
    assert [(row["model"].split()[0], row["distance"], row["dim"]) for row in rows] == [
        (esm2["fairseq64"].name, "cosine", DIM), (esm2["fairseq64"].name, "l2", DIM),
        ("untrained", "cosine", DIM), ("untrained", "l2", DIM)]
    for row in rows:
        assert 0 <= row["fold"]["auc"] <= 1 and row["fold"]["queries"] > 0
    assert rows[0]["fold"]["auc"] != rows[2]["fold"]["auc"]
    lengths = [len("".join(r.splitlines()[1:])) for r in records]
    assert max(lengths) > 62 and report["data"]["domains"] <= 150


# ---------------------------------------------------------------- a checkpoint of fairseq-train --arch esm2_t4_1M


@pytest.fixture(scope="module")
def trained_esm2(clean_data, tmp_path_factory) -> Path:
    """``checkpoint_last.pt`` of two updates of the real fairseq-train: ``--arch esm2_t4_1M --max-positions 64``
    on the shared real-protein data-bin (optimizer state and all, as users hold them)."""
    save = tmp_path_factory.mktemp("trained-esm2")
    argv = [str(clean_data), "--user-dir", str(ROOT / "fairseq_esm"), "--task", "protein_mlm", "--criterion",
            "esm_masked_lm", "--arch", "esm2_t4_1M", "--max-positions", str(SHORT_WINDOW), "--max-tokens", "1024",
            "--seed", "3", "--num-workers", "0", "--optimizer", "adam", "--lr", "1e-3", "--max-update", "2",
            "--disable-validation", "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "1",
            "--save-dir", str(save), "--cpu"]
    checkpoint, _ = run_fairseq_train(argv, save, torch.device("cpu"), progress=False)
    return checkpoint


def test_fairseq_train_esm2_checkpoint_through_the_tools(trained_esm2, proteins, tmp_path, capsys):
    """extract (windows), score, contacts and convert read what fairseq-train wrote for an ESM-2 arch."""
    stored = read_file(trained_esm2)
    assert stored["cfg"]["model"]["_name"] == "esm2_t4_1M" and stored["optimizer_history"][-1]["num_updates"] == 2
    model, alphabet = load_model(trained_esm2)
    assert (model.generation.name, model.num_layers, model.cfg.encoder_embed_dim) == ("esm2", 4, 128)
    assert model.max_positions() == SHORT_WINDOW and model.embed_positions is None
    fasta = write_fasta(tmp_path / "in.fasta", [("short", proteins["short"]), ("long", proteins["long"])])
    out = tmp_path / "extract"
    assert run_main(extract.main, [str(trained_esm2), str(fasta), "--out", str(out), "--include", "mean",
                                   "per_tok"]) == 0
    assert "windowed 1, truncated 0" in capsys.readouterr().err
    results = {r["label"]: r for r in (torch.load(path) for path in out.glob("*.pt"))}
    with torch.no_grad():
        direct = model(alphabet.tokenize(proteins["short"])[None], repr_layers=[4])["representations"][4]
    assert (results["short"]["mean_representations"][4] - direct[0, 1:-1].mean(0)).abs().max() <= 1e-5
    assert results["long"]["representations"][4].shape == (len(proteins["long"]), 128)
    scores = tmp_path / "scores.tsv"
    assert run_main(score.main, [str(trained_esm2), str(fasta), "--out", str(scores)]) == 0
    seq, pll = proteins["short"], 0.0
    for i in range(len(seq)):
        tokens = alphabet.tokenize(seq)[None]
        true = int(tokens[0, i + 1])
        tokens[0, i + 1] = alphabet.mask_idx
        with torch.no_grad():
            pll += float(torch.log_softmax(model(tokens)["logits"][0, i + 1], -1)[true])
    assert float(read_tsv(scores)[0]["pll"]) == pytest.approx(pll, abs=1e-4 * len(seq))
    maps = tmp_path / "contacts"
    assert run_main(contacts.main, ["predict", str(trained_esm2), str(fasta), "--out", str(maps), "--no-png"]) == 0
    assert "no fitted contact regression" in capsys.readouterr().err  # fairseq-train never fits it
    with torch.no_grad():
        expected = model.predict_contacts(alphabet.tokenize(seq)[None])[0].numpy()
    assert np.abs(np.load(maps / "short.npy") - expected).max() <= 1e-5
    official = tmp_path / "esm2_t4_trained.pt"
    assert run_main(convert.main, [str(trained_esm2), "--out", str(official), "--to", "official"]) == 0
    theirs, their_alphabet = load_model_and_alphabet_local(str(official))
    tokens = their_alphabet.get_batch_converter()([("a", seq), ("b", proteins["short2"])])[2]
    with torch.no_grad():
        assert (theirs.eval()(tokens)["logits"] - model(tokens)["logits"]).abs().max() <= 1e-5


# ---------------------------------------------------------------- SS8 and contact heads on an ESM-2 backbone


@pytest.fixture(scope="module")
def structure_data(tmp_path_factory) -> Path:
    """A protein_ss8 / protein_contacts data dir of the shipped labelled chains up to 120 residues (train) and
    the two shortest (valid), written by the dataset builder's own writer."""
    chains, _ = structure_dataset.gather([str(DATA / "probes" / "labels")], 120)
    chains.sort(key=lambda c: len(c.sequence))
    out = tmp_path_factory.mktemp("structure-data")
    write_data_dictionary(out)
    structure_dataset.write_split(out, "train", chains)
    structure_dataset.write_split(out, "valid", chains[:2])
    assert max(len(c.sequence) for c in chains) > SHORT_WINDOW  # the 64-position backbone windows some
    return out


def head_argv(data: Path, task: str, arch: str, backbone: Path, save: Path, *extra: str) -> list[str]:
    """fairseq-train's command line for a few updates of a head."""
    return [str(data), "--user-dir", str(ROOT / "fairseq_esm"), "--task", task, "--arch", arch, "--criterion", task,
            "--pretrained-checkpoint", str(backbone), "--optimizer", "adam", "--lr", "3e-3", "--max-tokens", "1024",
            "--max-update", "3", "--num-workers", "0", "--seed", "1", "--save-dir", str(save),
            "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "1", "--disable-validation", "--cpu",
            *extra]


@pytest.mark.parametrize("task, arch, which, extra", [
    ("protein_ss8", "netsurf_ss8", "fairseq64", []),  # frozen, windowed backbone
    ("protein_contacts", "contact_resnet", "official", ["--finetune-backbone", "--blocks", "2"]),
])
def test_heads_train_on_an_esm2_backbone(task, arch, which, extra, esm2, structure_data, tmp_path):
    backbone = esm2[which]
    checkpoint, epoch_losses = run_fairseq_train(head_argv(structure_data, task, arch, backbone, tmp_path / "ck",
                                                           *extra), tmp_path / "ck", torch.device("cpu"),
                                                 progress=False)
    assert epoch_losses and all(math.isfinite(loss) for loss in epoch_losses)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["optimizer_history"][-1]["num_updates"] == 3
    trained = {k.removeprefix("backbone.model."): v for k, v in saved["model"].items() if k.startswith("backbone.")}
    start = load_model(backbone)[0].state_dict()
    assert trained.keys() == start.keys()
    changed = [k for k in start if not torch.equal(trained[k], start[k])]
    if "--finetune-backbone" in extra:
        assert "layers.0.self_attn.q_proj.weight" in changed
    else:
        assert changed == []  # frozen: the backbone is the ESM-2 checkpoint, bit for bit


def test_backbone_alphabet_mismatch_names_the_generation(esm2, structure_data):
    task = SecondaryStructureTask.setup_task(StructureTaskConfig(data=str(structure_data), alphabet="esm1", seed=1,
                                                                 train_subset="train"))
    with pytest.raises(CheckpointError, match="is an esm2 model \\(the esm1b alphabet\\).*set --alphabet esm1b"):
        NetsurfSS8Model.build_model(NetsurfConfig(pretrained_checkpoint=str(esm2["official"])), task)
