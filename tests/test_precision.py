"""bfloat16 and int8 on the CPU: fairseq-train ``--bf16 --cpu`` trains, and every inference tool's ``--bf16`` /
``--int8`` stays within the accuracy bounds against float32 on real data: per-residue representations cosine
>= 0.999, held-out masked-LM ECE within 1%, zero-shot variant Spearman within 0.01, contact precision within
1 point. Speed is measured by ``benchmarks/cpu_limit.py``, never here."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from helpers.proteins import read_records, write_fasta
from helpers.training import losses, run, train_args
from scipy.stats import spearmanr

from fairseq_esm.checkpoints import load_model
from fairseq_esm.cli import contacts, extract, lm_table, variants
from fairseq_esm.cli.common import run_main
from fairseq_esm.models.esm import Esm1bConfig, Esm1bModel, Esm1Config, Esm1Model, Esm2Config, Esm2Model
from fairseq_esm.modules import precision as precision_module
from fairseq_esm.modules.alphabet import Alphabet
from fairseq_esm.modules.precision import set_precision

ROOT = Path(__file__).resolve().parents[1]
DMS = ROOT / "examples" / "data" / "dms"
STRUCTURES = ROOT / "examples" / "data" / "structures"
LOW = ("bf16", "int8")


@pytest.fixture(scope="module")
def bf16_trained(clean_data, tmp_path_factory) -> tuple[Path, str]:
    """A tiny ESM-1b trained 30 updates by ``fairseq-train --bf16 --cpu`` on real proteins, and its log."""
    save = tmp_path_factory.mktemp("bf16_train")
    log = run(["fairseq-train", *train_args(clean_data, save, "--cpu", "--bf16", "--max-update", "30",
                                            "--max-positions", "256")])
    return save / "checkpoint_last.pt", log


def test_fairseq_train_bf16_on_cpu(bf16_trained):
    """``--bf16 --cpu`` trains on the CPU (fairseq alone asks torch_xla for a TPU) and learns; the checkpoint
    holds float32 weights that every tool loads."""
    checkpoint, log = bf16_trained
    assert "training in bfloat16 on the CPU" in log
    per_update = {update: float(loss) for update, loss in losses(log).items()}
    assert sorted(per_update) == list(range(1, 31)) and all(math.isfinite(v) for v in per_update.values())
    assert per_update[30] < per_update[1] - 0.3, per_update
    model, _ = load_model(checkpoint)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def random_model(kind: str) -> tuple[torch.nn.Module, Alphabet]:
    """A random 3-layer model of one generation (d=64, 4 heads) in eval mode."""
    torch.manual_seed(0)
    model, config = {"esm1b": (Esm1bModel, Esm1bConfig), "esm2": (Esm2Model, Esm2Config),
                     "esm1": (Esm1Model, Esm1Config)}[kind]
    ffn = 256 if kind == "esm2" else 128
    sizes = config(encoder_layers=3, encoder_embed_dim=64, encoder_ffn_embed_dim=ffn, encoder_attention_heads=4,
                   max_positions=256)
    alphabet = Alphabet.from_architecture("esm1" if kind == "esm1" else "esm1b")
    return model(sizes, alphabet).eval(), alphabet


@pytest.mark.parametrize("kind", ["esm1b", "esm2", "esm1"])
@pytest.mark.parametrize("precision", LOW)
def test_low_precision_outputs_are_float32_and_close(kind, precision, sample_proteins):
    """Every output of a bf16 / int8 model is float32 on the CPU, and close to float32's on real proteins (random
    weights quantise worse than trained ones: int8's 0.999 bound is held on a trained model below)."""
    model, alphabet = random_model(kind)
    _, _, tokens = alphabet.get_batch_converter()([(str(i), p[: 120 - 30 * i]) for i, p in
                                                   enumerate(sample_proteins[:3])])
    with torch.no_grad():
        reference = model(tokens, repr_layers=[0, 3], return_contacts=True)
        low = set_precision(model, precision)(tokens, repr_layers=[0, 3], return_contacts=True)
    residues = tokens.ne(alphabet.padding_idx)
    for key in ("logits", "attentions", "contacts"):
        assert low[key].dtype == torch.float32, key
    for layer in (0, 3):
        assert low["representations"][layer].dtype == torch.float32
        cosine = torch.cosine_similarity(low["representations"][layer][residues],
                                         reference["representations"][layer][residues], dim=-1)
        assert cosine.min() >= (0.999 if precision == "bf16" else 0.995), (layer, cosine.min())
    assert (low["contacts"] - reference["contacts"]).abs().max() < 0.02
    assert (low["logits"].log_softmax(-1) - reference["logits"].log_softmax(-1))[residues].abs().max() < 0.1


def test_fp16_on_cpu_is_refused(tmp_path, capsys, bf16_trained):
    """``--fp16`` on a CPU: one error line naming the CPU options, before anything runs."""
    fasta = write_fasta(tmp_path / "p.fasta", read_records(2))
    status = run_main(extract.main, [str(bf16_trained[0]), str(fasta), "--out", str(tmp_path / "out"), "--fp16",
                                     "--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: --fp16 needs a GPU") and "--bf16" in err and "--int8" in err


def test_bf16_without_hardware_says_so(tmp_path, capsys, monkeypatch, bf16_trained):
    """On a CPU without bfloat16 instructions ``--bf16`` still runs, with a note naming ``--int8``."""
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    fasta = write_fasta(tmp_path / "p.fasta", read_records(2))
    status = run_main(extract.main, [str(bf16_trained[0]), str(fasta), "--out", str(tmp_path / "out"), "--bf16",
                                     "--device", "cpu", "--no-progress"])
    assert status == 0 and "no bfloat16 instructions" in capsys.readouterr().err


def extracted(checkpoint: Path, fasta: Path, out: Path, *flags: str) -> dict[str, torch.Tensor]:
    """Per-residue last-layer representations by id, through fairseq-esm-extract."""
    status = run_main(extract.main, [str(checkpoint), str(fasta), "--out", str(out), "--include", "per_tok",
                                     "--repr-layers", "-1", "--no-progress", *flags])
    assert status == 0
    rows = [line.split("\t") for line in (out / "index.tsv").read_text().splitlines()[1:]]
    return {rid: next(iter(torch.load(out / name)["representations"].values())) for rid, name, *_ in rows}


@pytest.mark.parametrize("precision", LOW)
def test_extract_representations_cosine(precision, bf16_trained, tmp_path):
    """fairseq-esm-extract --bf16 / --int8: every residue's representation has cosine >= 0.999 with float32's."""
    fasta = write_fasta(tmp_path / "p.fasta", read_records(40))
    reference = extracted(bf16_trained[0], fasta, tmp_path / "fp32")
    low = extracted(bf16_trained[0], fasta, tmp_path / precision, f"--{precision}")
    assert reference.keys() == low.keys() and len(low) == 40
    worst = min(torch.cosine_similarity(low[k], reference[k], dim=-1).min().item() for k in low)
    assert worst >= 0.999, worst


def test_heldout_ece_within_one_percent(bf16_trained, clean_data, capsys):
    """fairseq-esm-lm-table --bf16 / --int8: the held-out ECE (same masks) within 1% of float32's."""
    ece = {}
    for precision in ("fp32", *LOW):
        flags = [] if precision == "fp32" else [f"--{precision}"]
        assert run_main(lm_table.main, [str(clean_data), "--subset", "valid", "--model",
                                        f"m={bf16_trained[0]}", "--no-progress", *flags]) == 0
        ece[precision] = float(capsys.readouterr().out.splitlines()[-1].split("|")[5])
    assert all(abs(ece[p] / ece["fp32"] - 1) < 0.01 for p in LOW), ece


def spearman(path: Path) -> float:
    """Spearman of the model's score against the measured one in a fairseq-esm-variants table."""
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["status"] == "ok"]
    return spearmanr([float(r["masked_marginal"]) for r in rows], [float(r["DMS_score"]) for r in rows])[0]


def test_variant_spearman_within_0_01(bf16_trained, tmp_path):
    """fairseq-esm-variants --bf16 / --int8 (masked marginals on real TEM-1 mutants): Spearman within 0.01."""
    rho = {}
    for precision in ("fp32", *LOW):
        out = tmp_path / f"{precision}.csv"
        flags = [] if precision == "fp32" else [f"--{precision}"]
        assert run_main(variants.main, [str(bf16_trained[0]), "--fasta", str(DMS / "BLAT_ECOLX.fasta"), "--table",
                                        str(DMS / "BLAT_ECOLX_Stiffler_2015_slice.csv"), "--max-variants", "300",
                                        "--out", str(out), "--no-progress", *flags]) == 0
        rho[precision] = spearman(out)
    assert all(abs(rho[p] - rho["fp32"]) <= 0.01 for p in LOW), rho


def test_contact_precision_within_one_point(bf16_trained, tmp_path):
    """fairseq-esm-contacts evaluate --bf16 / --int8 on real structures, with a regression fitted in float32:
    precision at L (short, medium, long range) within 1 point. (At L/2 and L/5 one swapped pair of these small
    chains moves a figure by more than a point; docs/results.md has the whole table on a larger model.)"""
    fitting = [str(STRUCTURES / name) for name in ("1A7G.cif.gz", "4CUP.cif.gz", "1A8O.pdb.gz")]
    regression = tmp_path / "regression.pt"
    assert run_main(contacts.main, ["fit", str(bf16_trained[0]), *fitting, "--out", str(regression)]) == 0
    structures = fitting + [str(STRUCTURES / name) for name in ("1LCD.pdb.gz", "2BEG.pdb.gz")]
    tables = {}
    for precision in ("fp32", *LOW):
        out = tmp_path / f"{precision}.tsv"
        flags = [] if precision == "fp32" else [f"--{precision}"]
        assert run_main(contacts.main, ["evaluate", str(bf16_trained[0]), *structures, "--regression",
                                        str(regression), "--out", str(out), *flags]) == 0
        header, *_, mean = [line.split("\t") for line in out.read_text().splitlines()]
        tables[precision] = {key: float(value) for key, value in zip(header[3:], mean[3:]) if key.endswith("P@L")}
    assert len(tables["fp32"]) == 3
    for precision in LOW:
        assert all(abs(tables[precision][k] - tables["fp32"][k]) <= 0.01 for k in tables["fp32"]), tables


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_linear_is_the_linear_it_packs(dtype):
    """PackedLinear (oneDNN, weights packed once) computes nn.Linear (+ exact GELU for fc1), saves and loads
    nn.Linear's state-dict keys, and deep-copies."""
    import copy

    import torch.nn.functional as F

    from fairseq_esm.modules.precision import PackedLinear, can_pack

    if not can_pack(torch.device("cpu")):
        pytest.skip("torch built without oneDNN")
    torch.manual_seed(0)
    linear, x = torch.nn.Linear(64, 256), torch.randn(3, 17, 64)
    tolerance = 1e-5 if dtype == torch.float32 else 0.05
    with torch.no_grad():
        for gelu in (False, True):
            packed = PackedLinear(linear, dtype, gelu=gelu)
            expected = F.gelu(linear(x)) if gelu else linear(x)
            assert packed(x).dtype == dtype
            assert (packed(x).float() - expected).abs().max() < tolerance
            assert (copy.deepcopy(packed)(x) == packed(x)).all()
        state = packed.state_dict()
        assert set(state) == {"weight", "bias"} and (state["weight"] == linear.weight.to(dtype)).all()
        other = PackedLinear(torch.nn.Linear(64, 256), dtype, gelu=True)
        other.load_state_dict(state)
        assert (other(x) == packed(x)).all()


def test_a_model_is_prepared_once(sample_proteins):
    """set_precision twice is refused (weights were already packed or rounded): load the model again."""
    model, _ = random_model("esm1b")
    set_precision(model, "bf16")
    with pytest.raises(ValueError, match="already prepared"):
        set_precision(model, "fp32")


def test_fairseq_train_bf16_without_a_tpu_needs_no_cpu_flag(clean_data, tmp_path):
    """Without torch_xla, ``--bf16`` alone trains (on the GPU if there is one, else the CPU) instead of failing on
    the TPU fairseq's parser infers from it."""
    import importlib.util

    if importlib.util.find_spec("torch_xla") is not None or torch.cuda.is_available():
        pytest.skip("a TPU library or a GPU is present: fairseq's own choice applies")
    log = run(["fairseq-train", *train_args(clean_data, tmp_path, "--bf16", "--max-update", "2")])
    assert "training in bfloat16 on the GPU if there is one, else the CPU" in log
    assert sorted(losses(log)) == [1, 2]
