"""The one way featx writes a file: through a temporary sibling renamed into place, so that a reader
sees the whole file or none of it, and a failed write (a full disk, a read-only folder) leaves nothing
behind and names the path and the cause in one :class:`~featx.errors.OutputError`.

Every writer uses it: cache shards and their commit markers, the stat memo, ``--out`` files, the errors
CSV, the HTML page, the tuning file and stored calibrations. Temporary names start with ``TMP_PREFIX``,
which readers skip and ``featx cache prune`` removes once their writer is gone.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from featx.errors import OutputError, ParameterError

TMP_PREFIX = ".tmp-"


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
def temporary_sibling(path: Path, what: str) -> Iterator[Path]:
    """A temporary sibling of ``path``: removed if anything fails, OS errors raised as
    :class:`OutputError` ("``what``: cannot write PATH: cause"). The caller renames it into place."""
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        yield tmp
    except OSError as error:
        _remove(tmp)
        raise OutputError(f"{what}: cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(path: Path, write: Callable[[BinaryIO], object], what: str) -> None:
    """Write ``path`` whole or not at all: ``write(handle)`` into a temporary sibling, fsync, rename."""
    with temporary_sibling(path, what) as tmp:
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
