"""File names for records: one file per protein, named after its id, safe on every file system."""

import re
from typing import Sequence


def file_stems(ids: Sequence[str]) -> list[str]:
    """File-safe, unique names for record ids (``sp|P1|X`` -> ``sp_P1_X``; repeats get ``.2``, ``.3``)."""
    stems, seen = [], set()
    for record_id in ids:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", record_id).lstrip(".") or "protein"
        stem, n = base, 1
        while stem.lower() in seen:
            n += 1
            stem = f"{base}.{n}"
        seen.add(stem.lower())
        stems.append(stem)
    return stems
