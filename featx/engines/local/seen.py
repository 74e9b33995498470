"""Content keys of the files this process has read, by path and stat signature.

A warm re-run in the same process (the next ``transform`` of a grid search) keys an unchanged file by one
``stat``, as make and git do, instead of reading it again. A file whose size, mtime, ctime or inode
changed is read again; so is one that changed while it was being read (its signature is not kept). What a
process learns is kept beside the cache (:mod:`featx.cache.stat_memo`) and adopted by the next one.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from typing import Any

from featx.cache.stat_memo import Entries, Signature
from featx.inputs import sources

LIMIT = 2_000_000  # paths remembered at most (about 300 MB); past it the memo starts over
_SEEN: Entries = {}
_LEARNED: Entries = {}  # remembered since the last :func:`learned`


def signature(image: Any) -> Signature | None:
    """(size, mtime, ctime, inode) of a local regular file; None for anything else."""
    if not _may_be_local(image):
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
    if len(_LEARNED) >= LIMIT:
        _LEARNED.clear()
    _SEEN[os.fspath(image)] = _LEARNED[os.fspath(image)] = (file_signature, key)


def adopt(entries: Entries) -> None:
    """Remember what an earlier process learned, where this one knows nothing newer."""
    if len(_SEEN) + len(entries) > LIMIT:
        _SEEN.clear()
    for path, entry in entries.items():
        _SEEN.setdefault(path, entry)


def learned() -> Entries:
    """What this process remembered since the last call (each entry handed out once)."""
    entries = dict(_LEARNED)
    _LEARNED.clear()
    return entries


def local_paths(images: Iterable[Any]) -> list[str]:
    """The inputs that may be local files, as paths."""
    return [os.fspath(image) for image in images if _may_be_local(image)]


def _may_be_local(image: Any) -> bool:
    return isinstance(image, os.PathLike) or (isinstance(image, str) and not sources.is_url(image))
