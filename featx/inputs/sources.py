"""Where images live, each named by one string that manifests, errors CSVs and feature files can hold:

- a local path: ``/data/cat.jpg``;
- an fsspec URL: ``s3://bucket/cat.jpg``, ``gs://...``, ``https://...``, ``file:///...``;
- a member of a tar shard (WebDataset), in fsspec's chained form: ``tar://000042.jpg::s3://bucket/shard-0007.tar``;
- a cell of a Parquet table whose image column holds encoded bytes, in the same form:
  ``row://image/42::/data/train.parquet`` (:mod:`featx.inputs.tables`).

:func:`read_bytes` reads any of them by its name. Credentials and endpoints come the standard way
(``AWS_*`` variables including ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, fsspec's
configuration files). A shard is indexed once per process (its tar headers only) and its members are then
read by range, so decoding workers read each image's bytes themselves; the batch job instead streams each
shard once, front to back (:mod:`featx.inputs.shards`).
"""

from __future__ import annotations

import functools
import os

from featx.inputs import remote_files, tables, timeouts
from featx.inputs.suffixes import IMAGE_SUFFIXES, SHARD_SUFFIXES
from featx.inputs.tar_members import IndexedShard

__all__ = ["IMAGE_SUFFIXES", "SHARD_SUFFIXES"]  # besides the functions: the names featx recognises

TAR_PREFIX = "tar://"


def is_url(path: str) -> bool:
    return "://" in path


def member_path(shard: str, member: str) -> str:
    return f"{TAR_PREFIX}{member}::{shard}"


def read_bytes(path: str, limit: int = -1) -> bytes:
    """The bytes behind a URL or a tar member, at most ``limit`` of them (-1: all); fsspec errors pass
    through: FileNotFoundError, OSError..."""
    import fsspec

    timeouts.ensure()
    if path.startswith(TAR_PREFIX):
        member, _, shard = path[len(TAR_PREFIX) :].partition("::")
        return indexed_shard(shard).read(member, limit)
    if path.startswith(tables.ROW_PREFIX):
        return tables.table_cell(path)
    with fsspec.open(path, "rb") as handle:
        return handle.read(limit)


def indexed_shard(shard: str) -> IndexedShard:
    """The shard's index, built once per process from its headers."""
    return _shard_in(os.getpid(), shard)


@functools.lru_cache(maxsize=32)
def _shard_in(process: int, shard: str) -> IndexedShard:
    """Keyed by process: a forked decoding worker must not use its parent's index, whose open file shares
    one offset with the parent's and every sibling's, so that their reads would interleave."""
    import fsspec

    timeouts.ensure()
    bounded = remote_files.open_shard(shard, streamed=False)
    handle = bounded if bounded is not None else fsspec.open(shard, "rb").open()
    try:
        return IndexedShard(handle)
    except BaseException:  # not cached, so never closed by anyone else
        handle.close()
        raise


def with_protocol(source: str, paths: list[str]) -> list[str]:
    """fsspec lists remote paths without their protocol (``bucket/a.tar``): give them back ``source``'s."""
    prefix = source.split("://", 1)[0] + "://" if is_url(source) else ""
    return [prefix + path if prefix and not is_url(path) else path for path in paths]
