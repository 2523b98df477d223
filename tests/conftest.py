"""Shared fixtures: real proteins from the shipped UniProt sample, and fairseq-preprocess'd slices."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import pytest
import torch
from fairseq import options
from fairseq_cli import preprocess
from helpers.oracle import fair_esm_model, write_official
from helpers.proteins import read_proteins
from helpers.training import tiny_data

from fairseq_esm.modules.alphabet import DICT_DIR


@pytest.fixture(scope="session")
def sample_proteins() -> list[str]:
    """The first 1,500 proteins of the sample (tests slice what they need)."""
    return read_proteins(1500)


@pytest.fixture(scope="session")
def fairseq_preprocess(tmp_path_factory) -> Callable[[list[str], list[str]], Path]:
    """Binarize train/valid proteins with the real fairseq-preprocess and our dict; returns data-bin."""

    def run(train: list[str], valid: list[str]) -> Path:
        work = tmp_path_factory.mktemp("data")
        (work / "train.txt").write_text("".join(" ".join(p) + "\n" for p in train))
        (work / "valid.txt").write_text("".join(" ".join(p) + "\n" for p in valid))
        args = options.get_preprocessing_parser().parse_args(
            ["--only-source", "--srcdict", str(DICT_DIR / "esm1b.txt"), "--trainpref", str(work / "train.txt"),
             "--validpref", str(work / "valid.txt"), "--destdir", str(work / "data-bin"), "--dataset-impl", "mmap",
             "--workers", "1"]
        )
        preprocess.main(args)
        return work / "data-bin"

    return run


@pytest.fixture(scope="session")
def clean_data(fairseq_preprocess, sample_proteins) -> Path:
    """The training tests' data-bin (240 train / 40 valid real proteins, ``helpers.training.tiny_data``); copy it
    before changing it."""
    return tiny_data(fairseq_preprocess, sample_proteins)


@pytest.fixture(scope="session")
def official_checkpoint(tmp_path_factory) -> Callable[..., Path]:
    """Factory: ``official_checkpoint("esm1b", seed=0, layers=3, ...)`` -> path of a random fair-esm
    model in the official release layout (cached per argument set for the session)."""

    made: dict[tuple, Path] = {}

    def build(variant: str = "esm1b", **sizes) -> Path:
        key = (variant, tuple(sorted(sizes.items())))
        if key not in made:
            name = f"{variant}_" + "_".join(f"{k}{v}" for k, v in sorted(sizes.items())) + ".pt"
            made[key] = write_official(fair_esm_model(variant, **sizes), tmp_path_factory.mktemp("official") / name)
        return made[key]

    return build


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread for every test: tiny models run fastest on one, and on a shared 2-core machine
    OpenMP's second thread spins against busy cores. (Subprocesses set their own threads.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def dms_rows() -> list[dict[str, str]]:
    """The rows of the shipped TEM-1 DMS slice (examples/data/dms), as csv.DictReader gives them."""
    path = Path(__file__).resolve().parents[1] / "examples" / "data" / "dms" / "BLAT_ECOLX_Stiffler_2015_slice.csv"
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
