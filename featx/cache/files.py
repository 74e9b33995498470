"""The on-disk format of the feature cache: names, checksums, and the one way a file is written.

Each shard is written by one process under a unique name: the vectors first, then the keys, each to a
temporary file that is fsynced and renamed into place (:func:`atomic_write`). The keys file is the commit
marker.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from featx._files import atomic_write as _atomic_write

FORMAT_VERSION = 2  # 2: each entry's checksum is bound to its key (cache/checksums.py)
KEY_DTYPE = np.dtype([("key", "S64"), ("crc32", "<u4")])
KEYS_SUFFIX = ".keys.npy"
VECTORS_SUFFIX = ".vectors.npy"
OPEN_SHARDS = 64  # memory maps kept open at once (each holds a file descriptor)


def fingerprint_id(fingerprint: Mapping[str, Any]) -> str:
    """A stable, readable directory name for a fingerprint: backbone, node and a hash of everything.

    One folder level whatever the names hold: ``timm/vit.tag`` or ``pkg.module:attr`` become
    ``timm_vit.tag`` and ``pkg.module_attr`` (the hash keeps them apart)."""
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    backbone = re.sub(r"[^\w.-]", "_", str(fingerprint.get("backbone", "model")))
    node = re.sub(r"[^\w-]", "_", str(fingerprint.get("node", "node")))
    return f"{backbone}-{node}-{digest}"


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """A cache file, whole or not at all (:func:`featx._files.atomic_write`); a failed write names the
    cache folder's file and the cause."""
    _atomic_write(path, write, "the feature cache")
