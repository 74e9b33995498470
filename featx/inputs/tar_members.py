"""Which members of a WebDataset shard featx uses: one rule for the batch job, which streams a shard, and
for the library, which lists a shard's headers and reads its members by name.

A sample is a run of consecutive members sharing a key (the name up to its first dot). Its first image
member is its image; a second one (another suffix, or the same name again) is unused, as is every
symbolic-link, hard-link or special member (featx reads regular members only, and never follows a link).
A name that occurs twice names its first occurrence, wherever it is read from (``tarfile`` and fsspec's
tar index would give the last). Every unused member is recorded with its reason, never dropped.
"""

from __future__ import annotations

import os
import tarfile
import threading
from typing import Any

from featx.inputs.suffixes import IMAGE_SUFFIXES


def key_and_extension(name: str) -> tuple[str, str]:
    """``"dir/000042.seg.png"`` -> (``"dir/000042"``, ``".seg.png"``): WebDataset's sample key and suffix."""
    directory, base = os.path.split(name)
    stem, dot, extension = base.partition(".")
    return os.path.join(directory, stem), "." + extension.lower() if dot else ""


def unused_because(member: tarfile.TarInfo, key: str, image: str | None) -> str | None:
    """Why ``member`` of sample ``key``, whose image so far is ``image``, is not used (None: it is)."""
    if not member.isfile():
        kind = "symbolic link" if member.issym() else "hard link" if member.islnk() else "special"
        return f"a {kind} member: featx reads regular members only"
    if key_and_extension(member.name)[1] in IMAGE_SUFFIXES and image is not None:
        return f"a second image member of sample {key} (the first, {image}, is used)"
    return None


class IndexedShard:
    """A shard's headers, read once (in random-access mode), and its members read by name: the first
    occurrence of a name, and only a regular member."""

    def __init__(self, handle: Any):
        # held open for the life of the index: members are read from it by offset (gzip: transparently)
        self._tar = tarfile.open(fileobj=handle, mode=f"r:{_compression(handle)}")  # noqa: SIM115
        self.members = [member for member in self._tar.getmembers() if not member.isdir()]
        self._first: dict[str, tarfile.TarInfo] = {}
        for member in self.members:
            self._first.setdefault(member.name, member)
        self._reading = threading.Lock()  # one file offset: two threads' seek-then-read must not interleave

    def read(self, name: str, limit: int = -1) -> bytes:
        """The bytes of member ``name`` (at most ``limit``); FileNotFoundError where there is none, and a
        ValueError naming the kind of a link or special member."""
        member = self._first.get(name)
        if member is None:
            raise FileNotFoundError(f"no member {name}")
        if not member.isfile():
            raise ValueError(unused_because(member, "", None))
        with self._reading:
            return self._tar.extractfile(member).read(limit)  # type: ignore[union-attr]  # a regular member


_MAGIC = {b"\x1f\x8b": "gz", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"(\xb5/\xfd": "zst"}


def _compression(handle: Any) -> str:
    """tarfile's name for the compression of the shard behind ``handle`` ("" for none), from its first
    bytes as tarfile's stream mode tells it: mode "r:*" tries each compression in turn, reading the
    shard's start once per try, and so waits out a silent server once per try. Unknown first bytes that
    arrived (another compression; no tar) are left to "r:*", which reads them from the buffer."""
    start = handle.tell()
    head = handle.read(tarfile.BLOCKSIZE)
    handle.seek(start)
    if head[257:262] == b"ustar" or len(head) < tarfile.BLOCKSIZE:  # a tar header, or too short for one
        return ""
    name = next((name for magic, name in _MAGIC.items() if head.startswith(magic)), "*")
    return name if name in tarfile.TarFile.OPEN_METH else "*"  # zstd: tarfile of Python 3.14 on
