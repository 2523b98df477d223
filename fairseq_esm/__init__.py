"""fairseq-esm: ESM-1 / ESM-1b protein language models as a fairseq plugin.

Importing this package (or passing ``--user-dir fairseq_esm``) registers the task, models and
criterion with fairseq's registries.
"""

from . import criterions, models, tasks  # noqa: F401  (imported for their registrations)

__version__ = "0.1.0"
