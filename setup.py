"""fairseq-esm: ESM-1 / ESM-1b protein language models as a fairseq plugin."""

from setuptools import find_packages, setup

setup(
    name="fairseq-esm",
    version="0.1.0",
    description="ESM-1b protein language models (Rives et al. 2021) as a fairseq plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["fairseq_esm", "fairseq_esm.*"]),
    package_data={"fairseq_esm": ["dicts/*.txt"]},
    install_requires=[
        # PyPI fairseq 0.12.2 does not import on Python 3.11; this is upstream main packaged for 3.11
        "fairseq-fixed==0.12.3.1",
        "numpy>=1.24,<2",  # fairseq uses np.compat, removed in numpy 2
        "torch>=2.6,<2.15",  # 2.6: weights_only=True by default, which fairseq's loader relies on; the Makefile installs 2.13.0 CPU
        "biopython>=1.88",  # PairwiseAligner score names used by data/structures.py
        "scipy>=1.10",
        "tqdm>=4.60",
        "scikit-learn>=1.8",  # L1 contact regression: l1_ratio with liblinear needs 1.8
        "matplotlib>=3.7",  # contact-map PNGs
        "faiss-cpu>=1.15,<2",  # nearest neighbours for remote homology (1.15.1 tested with numpy 1.26)
    ],
    extras_require={
        # fair-esm is the numerical oracle in tests only; nothing in fairseq_esm imports it
        "test": ["pytest>=8", "fair-esm==2.0.0", "transformers>=5.0"],
        # HuggingFace EsmForMaskedLM directories: load with any tool, convert both ways
        "hf": ["transformers>=5.0"],
    },
    entry_points={
        "console_scripts": [
            f"fairseq-esm-{name.replace('_', '-')}=fairseq_esm.cli.{name}:cli"
            for name in (
                # using a model
                "extract", "score", "variants", "contacts", "convert",
                # the paper's evaluations and baselines
                "ngram", "unigram_ece", "lm_table", "homology", "pfam_auc", "plots", "finetune_variants", "msa_features",
                "probes", "ss8_confusion",
                # data preparation (also reachable as preprocess/<name>.py)
                "binarize", "fasta_to_text", "split_fasta", "make_uniref_splits", "build_msas", "msa_split_features",
                "structure_labels", "structure_dataset", "backbone_json_to_pdb",
            )
        ],
    },
)
