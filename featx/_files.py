"""The one way featx writes a file: through a temporary sibling renamed into place, so that a reader
sees the whole file or none of it, and a failed write (a full disk, a read-only folder) leaves nothing
behind and names the path and the cause in one :class:`~featx.errors.OutputError`.

Every writer uses it: cache shards and their commit markers, the stat memo, ``--out`` files, the errors
CSV, the HTML page, the tuning file and stored calibrations. Temporary names start with ``TMP_PREFIX``
and name their writer (process id and machine), which readers skip. A writer killed with ``kill -9``
leaves its temporary file behind: the next write of the same output removes the siblings whose writer
is gone (:func:`remove_stale_siblings`), and ``featx cache prune`` removes the cache's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from featx.errors import OutputError, ParameterError

TMP_PREFIX = ".tmp-"
#: This machine, in writers' names: a process id means nothing on another machine sharing the folder.
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TMP_NAME = re.compile(r"\.tmp-(\d+)-(?:([0-9a-f]{8})-)?[0-9a-f]{8}-(.*)\Z", re.DOTALL)


def writer_tag() -> str:
    """This process as the writer of a file: ``PID-HOST``, read back by :func:`writer_gone`."""
    return f"{os.getpid()}-{HOST}"


def writer_gone(pid: int, host: str | None) -> bool:
    """Whether the process that wrote a file is certainly dead: a process id of this machine (or of a name
    without one) that no live process holds. A zombie is dead; another machine's writer is never judged."""
    if (host is not None and host != HOST) or pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's live process
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b")")[2].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def temporary_writer(name: str) -> tuple[int, str | None, str] | None:
    """(pid, host or None, the file it was to become) of a temporary file's name, or None if it is not one."""
    match = _TMP_NAME.match(name)
    return (int(match[1]), match[2], match[3]) if match else None


def remove_stale_siblings(path: Path) -> list[tuple[str, int]]:
    """Remove the temporary siblings of ``path`` that writers since killed left (dead process ids of this
    machine only: a live writer's file is kept); their names and sizes."""
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        writer = temporary_writer(entry.name)
        if writer is None or writer[2] != path.name or not writer_gone(writer[0], writer[1]):
            continue
        with contextlib.suppress(OSError):  # gone already, or not ours to remove
            size = entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)
            removed.append((entry.name, size))
    return removed


def local_path(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a local path, or one line refusing a URL: an atomic rename exists only on a file system,
    and ``Path("s3://bucket/x")`` would quietly become a local folder named ``s3:``."""
    text = os.fspath(path)
    if "://" in text:
        raise ParameterError(
            f"{what} {text!r} is a URL; featx writes to a local or mounted folder only (atomic renames "
            "need a file system). Write here, then copy it, e.g. with `aws s3 sync` or fsspec's put"
        )
    return Path(text).expanduser()


@contextlib.contextmanager
def temporary_sibling(path: Path, what: str, clean: bool = True) -> Iterator[Path]:
    """A temporary sibling of ``path``: removed if anything fails, OS errors raised as
    :class:`OutputError` ("``what``: cannot write PATH: cause). The caller renames it into place. With
    ``clean``, the siblings of killed writers of ``path`` go first (the cache, whose folders hold
    thousands of files, leaves that to ``featx cache prune``)."""
    if clean:
        remove_stale_siblings(path)
    tmp = path.with_name(f"{TMP_PREFIX}{writer_tag()}-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
    except OSError as error:
        _remove(tmp)
        raise OutputError(f"{what}: cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(path: Path, write: Callable[[BinaryIO], object], what: str, clean: bool = True) -> None:
    """Write ``path`` whole or not at all: ``write(handle)`` into a temporary sibling, fsync, rename."""
    with temporary_sibling(path, what, clean) as tmp:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)


def save_or_warn(
    path: Path, write: Callable[[Path], object], what: str, consequence: str, stacklevel: int = 2
) -> None:
    """Atomically write a file that only saves work (a measurement, a calibration): a read-only or full
    disk costs that work again next time, not the job, so it warns ("``what``: cannot write PATH: cause;
    ``consequence``") instead of raising."""
    try:
        with temporary_sibling(path, what) as tmp:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
            os.replace(tmp, path)
    except OutputError as error:
        warnings.warn(f"{error}; {consequence}", stacklevel=stacklevel + 1)


def _remove(tmp: Path) -> None:
    with contextlib.suppress(OSError):  # never there, or its folder is not one: nothing to remove
        tmp.unlink()
