"""The on-disk format of the feature cache: names, checksums, and the one way a file is written.

Each shard is written by one process under a unique name: the vectors first, then the keys, each to a
temporary file that is fsynced and renamed into place (:func:`atomic_write`). The keys file is the commit
marker. Every entry's checksum is bound to its namespace's fingerprint (:func:`fingerprint_tag`), so a
shard holds the vectors of one extractor provably, whatever folder it sits in and whatever
``namespace.json`` says.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from featx._files import HOST, TMP_PREFIX, temporary_writer, writer_gone
from featx._files import atomic_write as _atomic_write
from featx.errors import ParameterError

# 2: each entry's checksum is bound to its key; 3: and to its namespace's fingerprint (cache/checksums.py)
FORMAT_VERSION = 3
KEY_DTYPE = np.dtype([("key", "S64"), ("crc32", "<u4")])
KEYS_SUFFIX = ".keys.npy"
VECTORS_SUFFIX = ".vectors.npy"
OPEN_SHARDS = 64  # memory maps kept open at once (each holds a file descriptor)
STAT_MEMO = "stat-memo"  # the folder beside the namespaces holding the stat memo (cache/stat_memo.py)
FINGERPRINT_BYTES = 1 << 20  # a namespace.json larger than this is not one featx wrote
_SHARD_WRITER = re.compile(r"\d+-(\d+)-(?:([0-9a-f]{8})-)?[0-9a-f]{8}\Z")  # time-PID-HOST-unique


def _canonical(fingerprint: Mapping[str, Any]) -> bytes:
    return json.dumps(fingerprint, sort_keys=True, separators=(",", ":")).encode()


def fingerprint_tag(fingerprint: Mapping[str, Any]) -> int:
    """32 bits of a fingerprint's hash, mixed into each entry's stored checksum: a shard copied into
    another extractor's namespace fails every read there, like a flipped bit."""
    return int.from_bytes(
        hashlib.sha256(b"featx-namespace:" + _canonical(fingerprint)).digest()[:4], "little"
    )


def fingerprint_id(fingerprint: Mapping[str, Any]) -> str:
    """A stable, readable directory name for a fingerprint: backbone, node and a hash of everything.

    One folder level whatever the names hold: ``timm/vit.tag`` or ``pkg.module:attr`` become
    ``timm_vit.tag`` and ``pkg.module_attr`` (the hash keeps them apart)."""
    digest = hashlib.sha256(_canonical(fingerprint)).hexdigest()[:16]
    backbone = re.sub(r"[^\w.-]", "_", str(fingerprint.get("backbone", "model")))
    node = re.sub(r"[^\w-]", "_", str(fingerprint.get("node", "node")))
    return f"{backbone}-{node}-{digest}"


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """A cache file, whole or not at all (:func:`featx._files.atomic_write`); a failed write names the
    cache folder's file and the cause."""
    _atomic_write(path, write, "the feature cache", clean=False)  # prune removes killed writers' files


def not_a_file(path: Path) -> str | None:
    """What ``path`` is when it exists and is no regular file (a FIFO, device, socket or folder would
    block a reader or cannot be replaced); None otherwise. Links are followed (a loop is an OSError)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # not there, or a link loop: reading it says so
        return None
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a device")


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """A shard's keys or vectors file as ``np.load`` reads it (memory-mapped with ``mmap``); ValueError for
    one that is a FIFO, device or folder, never opened: opening a FIFO blocks until a writer comes, so a
    job, ``cache info`` or ``verify`` would wait for ever instead of recomputing the shard."""
    kind = not_a_file(path)
    if kind is not None:
        raise ValueError(f"{path.name} is {kind}, not a file")
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def read_fingerprint(folder: Path) -> dict[str, Any]:
    """A namespace folder's ``namespace.json``; ValueError (or OSError) where it holds no fingerprint. A
    FIFO or device is never opened, and no more than ``FINGERPRINT_BYTES`` are read."""
    path = folder / "namespace.json"
    kind = not_a_file(path)
    if kind is not None:
        raise ValueError(f"{kind}, not a file")
    with open(path, "rb") as handle:
        text = handle.read(FINGERPRINT_BYTES + 1)
    if len(text) > FINGERPRINT_BYTES:
        raise ValueError(f"over {FINGERPRINT_BYTES} bytes")
    stored = json.loads(text)
    if not isinstance(stored, dict):
        raise ValueError(f"a JSON {type(stored).__name__}, not a fingerprint")
    return stored


def claim_namespace(
    folder: Path, fingerprint: Mapping[str, Any], foreign_shards: Callable[[], tuple[int, int]]
) -> None:
    """Write ``folder``'s ``namespace.json``, or check it: a namespace folder renamed or copied under
    another fingerprint's name would serve that other extractor's vectors, silently.

    A missing or unreadable one is rewritten only if the shards prove they hold this fingerprint's
    vectors: ``foreign_shards()`` gives (shards sampled, shards whose checksums are bound to another
    fingerprint). One that is a folder, FIFO or device is refused, never opened."""
    meta = folder / "namespace.json"
    remove = f"featx cache prune {folder.parent} --namespace {folder.name}"
    kind = not_a_file(meta)
    if kind is not None:
        raise ParameterError(
            f"{meta} is {kind}, not the file featx writes, so which extractor's vectors {folder} holds "
            f"cannot be told: move it away, or remove the namespace ({remove})"
        )
    expected = json.loads(json.dumps(fingerprint))  # tuples as lists, as the file holds them
    try:
        stored, problem = read_fingerprint(folder), None
    except FileNotFoundError:
        stored, problem = None, "missing"
    except (OSError, ValueError) as error:
        stored, problem = None, f"unreadable ({error})"
    if stored is None:
        sampled, foreign = foreign_shards()
        if foreign:
            raise ParameterError(
                f"{meta} is {problem}, and {foreign} of the {sampled} shards in {folder} hold another "
                f"extractor's vectors (their checksums are bound to another fingerprint): the folder was "
                f"copied or renamed. Restore its namespace.json, or remove it ({remove})"
            )
        if sampled:
            warnings.warn(
                f"{meta} was {problem}; rewritten: its {sampled} shards proved to hold this extractor's "
                "vectors",
                stacklevel=3,
            )
        text = json.dumps(fingerprint, indent=2, sort_keys=True).encode()
        atomic_write(meta, lambda handle: handle.write(text))
    elif stored != expected:
        differ = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
        raise ParameterError(
            f"{meta} describes another extractor than this job's (they differ in {', '.join(differ)}): the "
            f"folder was renamed or copied, and its vectors are not this job's. Rename it back to "
            f"{fingerprint_id(stored)}, or remove it (featx cache prune {folder.parent} --namespace {folder.name})"
        )


def leftovers(folder: Path, committed: set[str], older_than_s: float) -> list[tuple[str, int]]:
    """Remove what killed writers left in ``folder`` (temporary files, vectors never committed); their
    names and sizes. A file whose writer was a process of this machine goes once that process is dead,
    never while it lives; another machine's goes once it is ``older_than_s`` seconds old."""
    removed, cutoff = [], time.time() - older_than_s
    for entry in list(os.scandir(folder)):
        shard = entry.name[: -len(VECTORS_SUFFIX)] if entry.name.endswith(VECTORS_SUFFIX) else None
        if entry.name.startswith(TMP_PREFIX):
            writer = temporary_writer(entry.name)
        elif shard is not None and shard not in committed:
            match = _SHARD_WRITER.match(shard)
            writer = (int(match[1]), match[2], shard) if match else None
        else:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if writer is not None and writer[1] in (None, HOST):
                abandoned = writer_gone(writer[0], writer[1])
            else:
                abandoned = info.st_mtime < cutoff
            if abandoned:
                os.unlink(entry.path)
                removed.append((entry.name, info.st_size))
        except OSError:  # gone already (another prune), or not ours to remove
            continue
    return removed
