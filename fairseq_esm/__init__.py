"""fairseq-esm: the ESM-1 / ESM-1b protein language models as a fairseq plugin.

``fairseq-train --user-dir fairseq_esm`` registers the tasks, models and criterions (fairseq imports
``fairseq_esm.tasks`` and ``fairseq_esm.models`` itself). Importing this package stays light: neither torch
nor fairseq is loaded until a name below is used. The Python API mirrors fair-esm's::

    import fairseq_esm as esm
    model, alphabet = esm.load_model("checkpoint_best.pt")  # fairseq, official fair-esm .pt or HF directory
    labels, strs, tokens = alphabet.get_batch_converter()([("p1", "MKTAYIAKQR")])
    out = model(tokens, repr_layers=[model.num_layers], return_contacts=True)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first use)
_LAZY = {
    "load_model": "fairseq_esm.checkpoints",
    "Alphabet": "fairseq_esm.modules.alphabet",
    "BatchConverter": "fairseq_esm.modules.alphabet",
    "ESM1": "fairseq_esm.modules.esm1",
    "CheckpointError": "fairseq_esm.checkpoints.pt_files",
    "export_official": "fairseq_esm.checkpoints.pt_files",
    "save_hf_model": "fairseq_esm.checkpoints.huggingface",
    "save_fairseq_checkpoint": "fairseq_esm.tasks.fairseq_checkpoint",
    "InputError": "fairseq_esm.errors",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fairseq_esm' has no attribute {name!r}")
