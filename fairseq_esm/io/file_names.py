"""File names for records: one file per protein, named after its id, safe on every file system.

The one rule every tool that writes a file per protein follows (extract, contacts, MSA tools):

- every character outside ``A-Z a-z 0-9 . _ -`` becomes ``_`` (``sp|P69905|HBA_HUMAN`` -> ``sp_P69905_HBA_HUMAN``);
  leading dots are dropped (no hidden files, no ``..``); an id with nothing left is ``protein``;
- an id longer than :data:`MAX_STEM` characters keeps its first :data:`MAX_STEM` and gets ``-`` and the first
  :data:`HASH_CHARS` hex digits of the SHA-1 of the whole id: a 300-character id fits any file system, and two
  long ids sharing a prefix stay apart (and no id of at most :data:`MAX_STEM` characters gets a name that long);
- names are unique *ignoring case*, as macOS and Windows compare them: a later id whose name is taken
  (a repeat, or an id differing only in case or in unsafe characters) gets ``.2``, ``.3``, ... in order.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Container, Iterable, Sequence

MAX_STEM = 100
HASH_CHARS = 12
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def file_stem(record_id: str) -> str:
    """The base name (no suffix, not yet made unique) of a record id under the rule above."""
    stem = _UNSAFE.sub("_", record_id).lstrip(".") or "protein"
    if len(stem) > MAX_STEM:
        stem = f"{stem[:MAX_STEM]}-{hashlib.sha1(record_id.encode('utf-8')).hexdigest()[:HASH_CHARS]}"
    return stem


def unique_stem(record_id: str, taken: Container[str]) -> str:
    """:func:`file_stem`, numbered ``.2``, ``.3``, ... until its case-folded form is not in ``taken``."""
    base = file_stem(record_id)
    stem, n = base, 1
    while stem.casefold() in taken:
        n += 1
        stem = f"{base}.{n}"
    return stem


def file_stems(ids: Iterable[str], taken: Iterable[str] = ()) -> list[str]:
    """File-safe names for record ids, unique ignoring case, also against the names in ``taken``
    (``sp|P1|X`` -> ``sp_P1_X``; repeats get ``.2``, ``.3``)."""
    seen = {name.casefold() for name in taken}
    stems = []
    for record_id in ids:
        stem = unique_stem(record_id, seen)
        seen.add(stem.casefold())
        stems.append(stem)
    return stems


def copy_numbers(ids: Sequence[str]) -> list[int]:
    """1 for the first record with an id, 2 for the second record with the same id, ..."""
    seen: Counter = Counter()
    numbers = []
    for record_id in ids:
        seen[record_id] += 1
        numbers.append(seen[record_id])
    return numbers
