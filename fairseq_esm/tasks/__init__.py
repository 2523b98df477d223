"""The plugin's tasks; importing this package registers the whole plugin (tasks, models, criterions).

fairseq imports ``tasks/`` and ``models/`` of a ``--user-dir`` itself, but not ``criterions/``, so they are
imported here. For fairseq's own console scripts the plugin also installs its one-line input errors and its
checkpoint reader (``tasks/fairseq_checkpoint.py``): ``fairseq-train --restore-file`` / ``--finetune-from-model``
and ``fairseq-validate --path`` then read every file the safe way first and read an official fair-esm ``.pt``
as the fairseq checkpoint ``fairseq-esm-convert --to fairseq`` would write for it.
"""

import fairseq_esm.data  # noqa: F401  (settles fairseq's import-time logging first)
from fairseq_esm import criterions, models  # noqa: F401  (registrations)
from fairseq_esm.errors import install_excepthook
from fairseq_esm.tasks import contact_probe, mutational_effect, protein_contacts, protein_mlm, protein_ss8  # noqa: F401
from fairseq_esm.tasks.bf16_on_cpu import install_bf16_on_cpu
from fairseq_esm.tasks.fairseq_checkpoint import install_checkpoint_reader

install_checkpoint_reader()
install_bf16_on_cpu()
install_excepthook()
