"""The bidirectional LSTM baseline (``bilstm_lm``) and its ``bidirectional_lm`` criterion, on real proteins."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fairseq import metrics
from fairseq.criterions import CRITERION_REGISTRY
from fairseq.data import data_utils
from fairseq.models import ARCH_MODEL_REGISTRY
from helpers.training import losses, run, tiny_data

from fairseq_esm.checkpoints.pt_files import CheckpointError
from fairseq_esm.criterions.bidirectional_lm import BidirectionalLMCriterion
from fairseq_esm.data.masking import mask_tokens, masking_scheme
from fairseq_esm.models.bilstm_lm import BILSTM_ARCHS, BiLstmConfig, BiLstmLanguageModel
from fairseq_esm.modules.alphabet import esm1b_alphabet


def tiny_model(alphabet, seed: int = 0, hidden: int = 24) -> BiLstmLanguageModel:
    """A 2-layer BiLSTM small enough for exhaustive checks (projected unless hidden == 16), in eval mode."""
    torch.manual_seed(seed)
    cfg = BiLstmConfig(lstm_layers=2, lstm_embed_dim=16, lstm_hidden_dim=hidden)
    return BiLstmLanguageModel(cfg, alphabet).eval()


def batch(alphabet, proteins: list[str]) -> torch.Tensor:
    """Right-padded (B, T) tokens, ``<cls>`` … ``<eos>``, as the task's collater builds them."""
    return data_utils.collate_tokens([alphabet.tokenize(p) for p in proteins], alphabet.padding_idx, left_pad=False)


def lstm_parameters(layers: int, embed: int, hidden: int) -> int:
    """Parameters of one projected LSTM stack: W_ih, W_hh, two biases and W_hr per layer (inputs are embed-wide)."""
    return layers * (4 * hidden * (embed + embed) + 8 * hidden + embed * hidden)


def test_registered():
    assert CRITERION_REGISTRY["bidirectional_lm"] is BidirectionalLMCriterion
    assert set(BILSTM_ARCHS) <= set(ARCH_MODEL_REGISTRY)
    assert all(ARCH_MODEL_REGISTRY[name] is BiLstmLanguageModel for name in BILSTM_ARCHS)


@pytest.mark.parametrize("hidden", [24, 16])
def test_no_leak_logits_at_i_ignore_token_i(sample_proteins, hidden: int):
    """Changing the residue at i leaves the logits at i unchanged, and changes them at i-1 and i+1."""
    alphabet = esm1b_alphabet()
    model = tiny_model(alphabet, hidden=hidden)
    tokens = alphabet.tokenize(sample_proteins[0][:60])  # (T,)
    positions = torch.arange(1, len(tokens) - 1)
    perturbed = tokens.repeat(len(positions), 1)  # row k changes residue positions[k]
    replacement = torch.where(tokens[positions] == alphabet.index("W"), alphabet.index("A"), alphabet.index("W"))
    perturbed[torch.arange(len(positions)), positions] = replacement
    with torch.no_grad():
        base = model(tokens.repeat(len(positions), 1))["logits"]  # (K, T, V), same batch shape: bitwise comparable
        logits = model(perturbed)["logits"]  # (K, T, V)
    rows = torch.arange(len(positions))
    assert torch.equal(logits[rows, positions], base[rows, positions])
    assert (logits[rows, positions - 1] - base[rows, positions - 1]).abs().amax(-1).min() > 1e-5
    assert (logits[rows, positions + 1] - base[rows, positions + 1]).abs().amax(-1).min() > 1e-5


@pytest.mark.parametrize("hidden", [24, 16])
def test_padded_batch_equals_one_by_one(sample_proteins, hidden: int):
    alphabet = esm1b_alphabet()
    model = tiny_model(alphabet, seed=1, hidden=hidden)
    proteins = [p[: 20 + 13 * k] for k, p in enumerate(sample_proteins[:6])]  # real residues, 6 lengths
    assert len({len(p) for p in proteins}) > 2, "need proteins of different lengths"
    with torch.no_grad():
        padded = model(batch(alphabet, proteins))["logits"]
        for row, protein in enumerate(proteins):
            alone = model(alphabet.tokenize(protein).unsqueeze(0))["logits"][0]
            torch.testing.assert_close(padded[row, : len(alone)], alone, atol=1e-5, rtol=1e-5)


def test_left_padding_is_refused(sample_proteins):
    alphabet = esm1b_alphabet()
    tokens = batch(alphabet, [sample_proteins[0][:10], sample_proteins[1][:20]]).flip(1)
    with pytest.raises(ValueError, match="right-padded"):
        tiny_model(alphabet)(tokens)


@pytest.mark.parametrize("arch, paper", [("bilstm_small", 28.4e6), ("bilstm_large", 113.4e6)])
def test_preset_parameter_counts_match_the_paper(arch: str, paper: float):
    layers, embed, hidden = BILSTM_ARCHS[arch]
    alphabet = esm1b_alphabet()
    with torch.device("meta"):  # sizes only: no 113M-parameter allocation
        model = BiLstmLanguageModel(BiLstmConfig(lstm_layers=layers, lstm_embed_dim=embed, lstm_hidden_dim=hidden),
                                    alphabet)
    count = sum(p.numel() for p in model.parameters())
    vocab = len(alphabet)
    assert count == 2 * lstm_parameters(layers, embed, hidden) + vocab * embed + (2 * embed + 1) * vocab
    assert abs(count - paper) / paper < 1e-3
    assert count == {"bilstm_small": 28_411_425, "bilstm_large": 113_493_537}[arch]


def test_tiny_arch_is_about_1m_parameters():
    layers, embed, hidden = BILSTM_ARCHS["bilstm_t2_1M"]
    model = BiLstmLanguageModel(BiLstmConfig(lstm_layers=layers, lstm_embed_dim=embed, lstm_hidden_dim=hidden),
                                esm1b_alphabet())
    assert sum(p.numel() for p in model.parameters()) == 1_204_833


def masked_sample(alphabet, proteins: list[str]) -> dict:
    """A protein_mlm-style sample: BERT-masked sources, originals at the masked positions, <pad> elsewhere."""
    scheme = masking_scheme(alphabet)
    rng = np.random.RandomState(5)
    pairs = [mask_tokens(alphabet.tokenize(p).numpy(), scheme, rng) for p in proteins]
    src = data_utils.collate_tokens([torch.from_numpy(s) for s, _ in pairs], alphabet.padding_idx, left_pad=False)
    target = data_utils.collate_tokens([torch.from_numpy(t) for _, t in pairs], alphabet.padding_idx, left_pad=False)
    return {"id": torch.arange(len(proteins)), "nsentences": len(proteins),
            "ntokens": int(src.ne(alphabet.padding_idx).sum()), "net_input": {"src_tokens": src}, "target": target}


def hand_loss(model, alphabet, protein: str, masked: np.ndarray) -> tuple[float, float]:
    """(nats over all residues, nats over the masked residues) of one protein, position by position."""
    tokens = alphabet.tokenize(protein)
    with torch.no_grad():
        logits = model(tokens.unsqueeze(0))["logits"][0]
    every, at_masked = 0.0, 0.0
    for i in range(1, len(tokens) - 1):  # residues sit between <cls> and <eos>
        nll = math.log(sum(math.exp(v) for v in logits[i].tolist())) - logits[i, tokens[i]].item()
        every += nll
        at_masked += nll if masked[i] else 0.0
    return every, at_masked


def test_criterion_scores_every_residue_of_the_rebuilt_protein(sample_proteins):
    alphabet = esm1b_alphabet()
    model = tiny_model(alphabet, seed=2)
    criterion = BidirectionalLMCriterion(SimpleNamespace(source_dictionary=alphabet))
    proteins = [p[:50] for p in sample_proteins[10:14]]
    sample = masked_sample(alphabet, proteins)
    assert sample["net_input"]["src_tokens"].eq(alphabet.mask_idx).any()
    loss, sample_size, log = criterion(model, sample)

    masked = sample["target"].ne(alphabet.padding_idx).numpy()
    by_hand = [hand_loss(model, alphabet, p, masked[row]) for row, p in enumerate(proteins)]
    assert sample_size == log["sample_size"] == sum(len(p) for p in proteins)
    assert loss.item() == pytest.approx(sum(every for every, _ in by_hand), rel=1e-5)
    assert log["masked_size"] == int(masked.sum())
    assert float(log["masked_loss"]) == pytest.approx(sum(m for _, m in by_hand), rel=1e-5)

    with metrics.aggregate() as agg:
        BidirectionalLMCriterion.reduce_metrics([log])
        stats = agg.get_smoothed_values()
    nats = loss.item() / sample_size
    assert stats["loss"] == pytest.approx(nats / math.log(2), abs=1e-3)
    assert stats["ppl"] == pytest.approx(math.exp(nats), abs=0.01)  # ppl is the per-residue ECE
    assert stats["masked_ppl"] == pytest.approx(math.exp(float(log["masked_loss"]) / log["masked_size"]), abs=0.01)


@pytest.mark.slow  # a fairseq-train run of the baseline; make table1 trains it too (make test-all)
def test_fairseq_train_then_validate(fairseq_preprocess, sample_proteins, tmp_path):
    """The real fairseq-train with bilstm_t2_1M and bidirectional_lm, then fairseq-validate on its checkpoint."""
    data = tiny_data(fairseq_preprocess, sample_proteins)
    save = tmp_path / "ckpt"
    task = ["--user-dir", "fairseq_esm", "--task", "protein_mlm", "--criterion", "bidirectional_lm",
            "--max-positions", "64", "--max-tokens", "1024", "--seed", "3", "--cpu", "--num-workers", "0"]
    log = run(["fairseq-train", str(data), *task, "--arch", "bilstm_t2_1M", "--optimizer", "adam",
               "--adam-betas", "(0.9, 0.999)", "--clip-norm", "0.1", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt",
               "--warmup-updates", "2", "--max-update", "12", "--disable-validation", "--no-epoch-checkpoints",
               "--log-format", "json", "--log-interval", "1", "--save-dir", str(save)])
    assert "num. shared model params: 1,204,833" in log  # --arch sizes reached the model
    curve = [float(loss) for _, loss in sorted(losses(log).items())]
    assert len(curve) == 12 and all(math.isfinite(x) for x in curve)
    assert curve[0] == pytest.approx(math.log2(33), abs=0.3)  # an untrained 33-way softmax
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3 - 0.3

    out = run(["fairseq-validate", str(data), *task, "--path", str(save / "checkpoint_last.pt"), "--log-format",
               "json"])
    line = [line for line in out.splitlines() if '"valid_ppl"' in line][-1]
    stats = json.loads(line[line.index("{"):])
    assert 1.0 < float(stats["valid_ppl"]) < 33.0
    assert float(stats["valid_ppl"]) == pytest.approx(2 ** float(stats["valid_loss"]), rel=0.01)
    assert math.isfinite(float(stats["valid_masked_ppl"]))


def test_checkpoint_of_another_size_is_one_short_error():
    """fairseq's resume/validate path (load_state_dict, strict): the differing keys, not torch's RuntimeError."""
    alphabet = esm1b_alphabet()
    wider = tiny_model(alphabet, hidden=32).state_dict()
    model = tiny_model(alphabet)
    with pytest.raises(CheckpointError, match=r"do not fit this bilstm_lm model .*: shape mismatches: "):
        model.load_state_dict(wider, strict=True)
    model.load_state_dict(tiny_model(alphabet, seed=1).state_dict(), strict=True)  # same size: loads
