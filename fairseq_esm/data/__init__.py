"""fairseq datasets for proteins: stored tokens, cropping, masking, cluster sampling, integrity checks, labels.

The plugin's first import of fairseq happens here, so its import-time log noise is settled once.
"""

import logging

# fairseq's speech task logs "Please install tensorboardX" at import: noise for every protein tool
logging.getLogger("fairseq.tasks.text_to_speech").setLevel(logging.WARNING)

import fairseq  # noqa: E402,F401

# fairseq's wav2vec2_classification calls logging.basicConfig(level=DEBUG) on import, which would put every
# library's debug chatter (matplotlib, PIL, ...) on our tools' stderr
if logging.getLogger().level == logging.DEBUG:
    logging.getLogger().setLevel(logging.INFO)
