"""Content keys of the files this process has read, by path and stat signature.

A warm re-run in the same process (the next ``transform`` of a grid search) keys an unchanged file by one
``stat``, as make and git do, instead of reading it again. A file whose size, mtime, ctime or inode
changed is read again; so is one that changed while it was being read (its signature is not kept).
"""

from __future__ import annotations

import os
import stat
from typing import Any

from featx import sources

Signature = tuple[int, int, int, int]

LIMIT = 2_000_000  # paths remembered at most (about 300 MB); past it the memo starts over
_SEEN: dict[str, tuple[Signature, str]] = {}


def signature(image: Any) -> Signature | None:
    """(size, mtime, ctime, inode) of a local regular file; None for anything else."""
    if not isinstance(image, (str, os.PathLike)) or (isinstance(image, str) and sources.is_url(image)):
        return None
    try:
        status = os.stat(image)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino


def remembered(image: Any) -> str | None:
    """The content key of ``image`` if this process read it and it has not changed since."""
    entry = _SEEN.get(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else None
    return entry[1] if entry is not None and entry[0] == signature(image) else None


def remember(image: Any, file_signature: Signature, key: str) -> None:
    if len(_SEEN) >= LIMIT:
        _SEEN.clear()
    _SEEN[os.fspath(image)] = (file_signature, key)
