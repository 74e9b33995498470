"""The on-disk format of the feature cache: names, checksums, and the one way a file is written.

Each shard is written by one process under a unique name: the vectors first, then the keys, each to a
temporary file that is fsynced and renamed into place (:func:`atomic_write`). The keys file is the commit
marker.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from featx._files import atomic_write as _atomic_write
from featx.errors import ParameterError

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


def read_fingerprint(folder: Path) -> dict[str, Any]:
    """A namespace folder's ``namespace.json``; ValueError (or OSError) where it holds no fingerprint."""
    stored = json.loads((folder / "namespace.json").read_bytes())
    if not isinstance(stored, dict):
        raise ValueError(f"a JSON {type(stored).__name__}, not a fingerprint")
    return stored


def claim_namespace(folder: Path, fingerprint: Mapping[str, Any]) -> None:
    """Write ``folder``'s ``namespace.json``, or check it: a namespace folder renamed or copied under
    another fingerprint's name would serve that other extractor's vectors, silently. An unreadable one
    is rewritten (the folder's name is this fingerprint's hash), with a warning."""
    meta = folder / "namespace.json"
    expected = json.loads(json.dumps(fingerprint))  # tuples as lists, as the file holds them
    try:
        stored = read_fingerprint(folder) if meta.exists() else None
    except (OSError, ValueError) as error:
        warnings.warn(f"{meta} was unreadable ({error}); rewritten from this job's fingerprint", stacklevel=3)
        stored = None
    if stored is None:
        text = json.dumps(fingerprint, indent=2, sort_keys=True).encode()
        atomic_write(meta, lambda handle: handle.write(text))
    elif stored != expected:
        differ = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
        raise ParameterError(
            f"{meta} describes another extractor than this job's (they differ in {', '.join(differ)}): the "
            f"folder was renamed or copied, and its vectors are not this job's. Rename it back to "
            f"{fingerprint_id(stored)}, or remove it (featx cache prune {folder.parent} --namespace {folder.name})"
        )
