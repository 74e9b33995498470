"""The on-disk format of the feature cache: names, checksums, and the one way a file is written.

Each shard is written by one process under a unique name: the vectors first, then the keys, each to a
temporary file that is fsynced and renamed into place (:func:`atomic_write`). The keys file is the commit
marker.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from featx.errors import OutputError

FORMAT_VERSION = 2  # 2: each entry's checksum is bound to its key (cache/checksums.py)
KEY_DTYPE = np.dtype([("key", "S64"), ("crc32", "<u4")])
KEYS_SUFFIX = ".keys.npy"
VECTORS_SUFFIX = ".vectors.npy"
TMP_PREFIX = ".tmp-"
OPEN_SHARDS = 64  # memory maps kept open at once (each holds a file descriptor)


def fingerprint_id(fingerprint: Mapping[str, Any]) -> str:
    """A stable, readable directory name for a fingerprint: backbone, node and a hash of everything."""
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    node = str(fingerprint.get("node", "node")).replace(".", "_").replace(os.sep, "_")
    return f"{fingerprint.get('backbone', 'model')}-{node}-{digest}"


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary sibling, fsync, then rename: readers see the whole file or none of it.

    A failed write (a full disk, a read-only folder) removes the temporary file and names the folder.
    """
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OutputError(
            f"cannot write to the feature cache {path.parent}: {error.strerror or error}"
        ) from None
