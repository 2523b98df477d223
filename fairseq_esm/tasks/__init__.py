"""The plugin's tasks; importing this package registers the whole plugin (tasks, models, criterions).

fairseq imports ``tasks/`` and ``models/`` of a ``--user-dir`` itself, but not ``criterions/``, so they are
imported here; the plugin's one-line input errors are installed for fairseq's own console scripts.
"""

import fairseq_esm.data  # noqa: F401  (settles fairseq's import-time logging first)
from fairseq_esm import criterions, models  # noqa: F401  (registrations)
from fairseq_esm.errors import install_excepthook
from fairseq_esm.tasks import contact_probe, mutational_effect, protein_contacts, protein_mlm, protein_ss8  # noqa: F401

install_excepthook()
