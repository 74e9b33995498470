"""The content key each local file had, kept beside the cache: a new process (a resumed or repeated batch
job) keys an unchanged file by one ``stat`` instead of reading it, as make and git do with their index.

Layout: ``CACHE_DIR/stat-memo/<part>.parquet``, one part per job that learned keys, each row a path (its
bytes), its stat signature (size, mtime, ctime, inode) and its content key. Parts are written to a
temporary name and renamed, later parts win for a path, and past ``MAX_PARTS`` a job merges them into one.
A part that cannot be read is skipped with a warning: the memo only saves reads, it never decides a key
(a file whose signature differs from its entry is read again). Each row carries a crc32 of all its
fields, so a row whose key was moved to another path (a column shuffled or edited by hand) is ignored
instead of keying a file by another file's content. Parts end in ``.v2.parquet``; parts of the earlier
format, without that check, are never read.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from isal import isal_zlib

from featx._files import TMP_PREFIX
from featx.cache.files import STAT_MEMO, atomic_write

Signature = tuple[int, int, int, int]
Entries = dict[str, tuple[Signature, str]]  # path -> (signature, content key)

FOLDER = STAT_MEMO
MAX_PARTS = 16
SCHEMA = pa.schema(
    [
        ("path", pa.binary()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("ctime_ns", pa.int64()),
        ("inode", pa.uint64()),
        ("key", pa.string()),
        ("check", pa.uint32()),
    ]
)
SUFFIX = ".v2.parquet"


def load(cache_root: Path, paths: Iterable[str]) -> Entries:
    """The entries of ``paths`` in every part (later parts win)."""
    parts = _parts(cache_root)
    wanted = pa.array({os.fsencode(path) for path in paths} if parts else [], pa.binary())
    if not len(wanted):
        return {}
    table = _read_parts(parts, lambda part: part.filter(pc.is_in(part["path"], value_set=wanted)))[0]
    return _entries(table) if table is not None else {}


def save(cache_root: Path, entries: Entries) -> None:
    """Add ``entries`` as one part; merge the parts once there are more than ``MAX_PARTS``. A memo that
    cannot be written is warned about, never fatal: the next run reads those files again."""
    if not entries:
        return
    folder = cache_root / FOLDER
    try:
        folder.mkdir(exist_ok=True)
        _write(folder, _table(entries))
        parts = _parts(cache_root)
        if len(parts) > MAX_PARTS:
            merged, read = _read_parts(parts)
            if merged is not None:
                _write(folder, _last_per_path(merged))
            for part in read:
                part.unlink(missing_ok=True)  # a part another merge removed first is fine
    except OSError as error:
        warnings.warn(
            f"featx: cannot keep the stat memo in {folder} ({error.strerror or error}); the next run "
            "reads unchanged files again to key them",
            stacklevel=2,
        )


def _parts(cache_root: Path) -> list[Path]:
    """Parts in the order they were written (names start with the time in nanoseconds)."""
    folder = cache_root / FOLDER
    return (
        sorted(p for p in folder.glob(f"*{SUFFIX}") if not p.name.startswith(TMP_PREFIX))
        if folder.is_dir()
        else []
    )


def _read_parts(
    parts: list[Path], keep: Callable[[pa.Table], pa.Table] = lambda rows: rows
) -> tuple[pa.Table | None, list[Path]]:
    """The rows of every readable part that ``keep`` keeps (a memo of other folders' files may be large),
    oldest first, and the parts read."""
    tables, read = [], []
    for part in parts:
        try:
            tables.append(keep(pq.read_table(part, schema=SCHEMA)))
            read.append(part)
        except FileNotFoundError:
            continue  # merged away meanwhile
        except (OSError, pa.ArrowException) as error:
            warnings.warn(
                f"featx: skipping the unreadable stat memo part {part} ({error}); delete it to silence this",
                stacklevel=3,
            )
    return (pa.concat_tables(tables) if tables else None), read


def _last_per_path(table: pa.Table) -> pa.Table:
    """Each path's last row, in the order of the table."""
    numbered = table.append_column("row", pa.array(np.arange(len(table))))
    last = numbered.group_by("path", use_threads=False).aggregate([("row", "max")])["row_max"]
    return table.take(np.sort(last.to_numpy()))


def _entries(table: pa.Table) -> Entries:
    rows = zip(*(table[name].to_pylist() for name in SCHEMA.names))
    return {
        os.fsdecode(path): ((size, mtime, ctime, inode), key)
        for path, size, mtime, ctime, inode, key, check in rows
        if check == _check(path, (size, mtime, ctime, inode), key)
    }


def _check(path: bytes, signature: Signature, key: str) -> int:
    """The crc32 that binds a row's path, stat signature and content key together."""
    fields = b"\0".join([path, *(str(value).encode() for value in signature), key.encode()])
    return isal_zlib.crc32(fields)


def _table(entries: Entries) -> pa.Table:
    signatures = zip(*(signature for signature, _ in entries.values()))
    paths = [os.fsencode(path) for path in entries]
    checks = [_check(path, signature, key) for path, (signature, key) in zip(paths, entries.values())]
    columns = [paths, *signatures, [key for _, key in entries.values()], checks]
    return pa.table([pa.array(column, field.type) for field, column in zip(SCHEMA, columns)], schema=SCHEMA)


def _write(folder: Path, table: pa.Table) -> None:
    name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
    atomic_write(folder / name, lambda handle: pq.write_table(table, handle))
