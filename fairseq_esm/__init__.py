"""fairseq-esm: ESM-1 / ESM-1b protein language models as a fairseq plugin.

Importing this package (or passing ``--user-dir fairseq_esm``) registers the task, models and
criterion with fairseq's registries.
"""

import logging

# fairseq's speech task logs "Please install tensorboardX" at import: noise for every protein CLI
logging.getLogger("fairseq.tasks.text_to_speech").setLevel(logging.WARNING)

from . import criterions, models, tasks  # noqa: E402,F401  (imported for their registrations)

# fairseq's wav2vec2_classification calls logging.basicConfig(level=DEBUG) on import, which would
# put every library's debug chatter (matplotlib, PIL, ...) on our tools' stderr
if logging.getLogger().level == logging.DEBUG:
    logging.getLogger().setLevel(logging.INFO)

__version__ = "0.1.0"
