"""Where images live, each named by one string that manifests, errors CSVs and feature files can hold:

- a local path: ``/data/cat.jpg``;
- an fsspec URL: ``s3://bucket/cat.jpg``, ``gs://...``, ``https://...``, ``file:///...``;
- a member of a tar shard (WebDataset), in fsspec's chained form: ``tar://000042.jpg::s3://bucket/shard-0007.tar``;
- a cell of a Parquet table whose image column holds encoded bytes (a Hugging Face dataset's ``image``
  struct, for example), in the same form: ``row://image/42::/data/train.parquet`` (column ``image``, row 42).

Credentials and endpoints come the standard way (``AWS_*`` variables including ``AWS_ENDPOINT_URL``,
``GOOGLE_APPLICATION_CREDENTIALS``, fsspec's configuration files). A shard is indexed once per process
(its tar headers only) and its members are then read by range, so decoding workers read each image's
bytes themselves; the batch job instead streams each shard once, front to back (:func:`stream_samples`),
as WebDataset does, so a remote shard is fetched once and never indexed. A table's row group is read once
per worker, as its rows come in order.

About 400 lines: each kind of source (file, URL, tar member, table cell) is a few lines beside the
others it is told apart from.
"""

from __future__ import annotations

import functools
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from featx.errors import ParameterError, ShardReadError
from featx.inputs import timeouts
from featx.inputs.suffixes import IMAGE_SUFFIXES, SHARD_SUFFIXES
from featx.inputs.tar_members import IndexedShard, key_and_extension, unused_because

__all__ = ["IMAGE_SUFFIXES", "SHARD_SUFFIXES"]  # besides the functions: the names featx recognises

TAR_PREFIX = "tar://"
ROW_PREFIX = "row://"


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
        return _shard(shard).read(member, limit)
    if path.startswith(ROW_PREFIX):
        return _table_cell(path)
    with fsspec.open(path, "rb") as handle:
        return handle.read(limit)


def _shard(shard: str) -> IndexedShard:
    """The shard's index, built once per process from its headers."""
    return _shard_in(os.getpid(), shard)


@functools.lru_cache(maxsize=32)
def _shard_in(process: int, shard: str) -> IndexedShard:
    """Keyed by process: a forked decoding worker must not use its parent's index, whose open file shares
    one offset with the parent's and every sibling's, so that their reads would interleave."""
    import fsspec

    timeouts.ensure()
    return IndexedShard(fsspec.open(shard, "rb").open())


def expand_shards(source: str) -> list[str]:
    """Shard names from a brace pattern (``shards-{0000..0099}.tar``), a quoted glob, a folder (local or
    remote) of shards, or one shard."""
    import fsspec
    from braceexpand import braceexpand

    timeouts.ensure()
    if "{" in source or source.endswith(SHARD_SUFFIXES) or any(char in source for char in "*?["):
        names = [name if is_url(name) else os.path.abspath(name) for name in braceexpand(source)]
        return [shard for name in names for shard in _globbed(name)]
    filesystem, root = fsspec.core.url_to_fs(source)
    found = sorted(path for path in filesystem.ls(root, detail=False) if path.endswith(SHARD_SUFFIXES))
    return with_protocol(source, found)


def _globbed(name: str) -> list[str]:
    """A shard name, or the shards a quoted glob (``shards/*.tar``, ``s3://b/part-??.tar``) matches, sorted:
    the shell expands an unquoted one, fsspec the rest, locally or in object storage alike."""
    if not any(char in name for char in "*?["):
        return [name]
    import fsspec

    timeouts.ensure()
    filesystem, pattern = fsspec.core.url_to_fs(name)
    found = sorted(filesystem.glob(pattern))
    if not found:
        raise ParameterError(
            f"{name} matches no shard; check the pattern (quote it, or let the shell expand it)"
        )
    return with_protocol(name, found)


def with_protocol(source: str, paths: list[str]) -> list[str]:
    """fsspec lists remote paths without their protocol (``bucket/a.tar``): give them back ``source``'s."""
    prefix = source.split("://", 1)[0] + "://" if is_url(source) else ""
    return [prefix + path if prefix and not is_url(path) else path for path in paths]


def is_shard_source(source: str) -> bool:
    """A shard (``.tar``, ``.tar.gz``, ``.tgz``), a brace pattern or glob of shards, or a folder holding
    shards and no images."""
    if source.endswith(SHARD_SUFFIXES) or (
        any(char in source for char in "{*?[") and any(suffix in source for suffix in SHARD_SUFFIXES)
    ):
        return True
    if is_url(source) or not os.path.isdir(source):
        return False
    names = os.listdir(source)
    return any(n.endswith(SHARD_SUFFIXES) for n in names) and not any(
        os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES for n in names
    )


def shard_manifest(shards: list[str]) -> pd.DataFrame:
    """One row per WebDataset sample, by the rule the batch job streams them with (:mod:`tar_members`):
    its image member's path, its key and shard, and a label from a ``.cls`` or ``.json`` member where
    present. Unused members and samples without an image are listed in ``attrs["skipped"]``."""
    rows, skipped = [], []
    for shard in shards:
        index = _shard(shard)
        samples: list[tuple[str, dict[str, str]]] = []  # consecutive members sharing a key, in order
        for member in index.members:
            key, extension = key_and_extension(member.name)
            if not samples or samples[-1][0] != key:
                samples.append((key, {}))
            members = samples[-1][1]
            image = _image_of(members)
            why = unused_because(member, key, image)
            if why is not None:
                skipped.append((member_path(shard, member.name), why))
            else:
                members.setdefault(extension, member.name)
        for key, members in samples:
            image = _image_of(members)
            if image is None:
                skipped.append((member_path(shard, key), f"no image member (members: {sorted(members)})"))
                continue
            rows.append(
                {
                    "path": member_path(shard, image),
                    "sample": key,
                    "shard": shard,
                    "label": _label(index, members),
                }
            )
    frame = pd.DataFrame(rows, columns=["path", "sample", "shard", "label"])
    if frame["label"].isna().all():
        frame = frame.drop(columns="label")
    frame.attrs["skipped"] = skipped
    return frame


def _image_of(members: dict[str, str]) -> str | None:
    """A sample's image member, from its members by suffix (None: it has none yet)."""
    return next((member for suffix, member in members.items() if suffix in IMAGE_SUFFIXES), None)


def _label(index: IndexedShard, members: dict[str, str]) -> str | None:
    for extension in (".cls", ".json"):
        if extension in members:
            return _label_from(extension, index.read(members[extension]))
    return None


def _label_from(extension: str, data: bytes) -> str | None:
    """A sample's label: a ``.cls`` member's text, or a ``.json`` member's ``label``, ``cls`` or ``class``."""
    if extension == ".cls":
        return data.decode(errors="replace").strip()
    try:
        meta = json.loads(data)
    except ValueError:
        return None
    if isinstance(meta, dict):
        return next((str(meta[k]) for k in ("label", "cls", "class") if k in meta), None)
    return None


@dataclass(frozen=True)
class Shards:
    """A job's source given as WebDataset shards: the job streams them (:func:`stream_samples`) rather
    than listing their members first."""

    names: list[str]


@dataclass(frozen=True)
class Sample:
    """One WebDataset sample as its shard streams past: its key, its image member's name and bytes (None
    when it has no image member), its label, the extensions of all its members, and the members it does
    not use, each with why (a second image member; a link, which featx never follows)."""

    key: str
    image: str | None
    content: bytes | None
    label: str | None
    extensions: tuple[str, ...]
    unused: tuple[tuple[str, str], ...] = ()


def stream_samples(shard: str, max_bytes: int | None = None) -> Iterator[Sample]:
    """Each sample of ``shard``, in order, from one front-to-back read of the shard (a sample's members are
    consecutive, as WebDataset writes them). Only a sample's first image member and its ``.cls`` / ``.json``
    are kept; every other image member and every link member is listed in ``Sample.unused``, never
    dropped without a record. Raises :class:`ShardReadError` where the shard cannot be opened or ends early: cut inside a
    member, inside a header, or at a member's end without the end-of-archive blocks every tar writer
    adds. The samples before that point have been yielded, the one being read included when its image
    was read whole. An image member over ``max_bytes`` is listed in ``unused`` unread."""
    import fsspec

    timeouts.ensure()
    member_name = last_read = None
    current: dict[str, Any] | None = None
    try:
        with fsspec.open(shard, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*", tarinfo=_EndAware) as tar:
            for member in tar:
                if member.isdir():
                    continue
                member_name = last_read = member.name
                key, extension = key_and_extension(member.name)
                if current is not None and current["key"] != key:
                    yield _sample(current)
                    current = None
                current = current or {
                    "key": key,
                    "image": None,
                    "content": None,
                    "labels": {},
                    "extensions": [],
                    "unused": [],
                }
                current["extensions"].append(extension)
                why = unused_because(member, key, current["image"])
                if why is not None:
                    current["unused"].append((member.name, why))
                elif extension in IMAGE_SUFFIXES and max_bytes is not None and member.size > max_bytes:
                    current["unused"].append(
                        (
                            member.name,
                            f"{member.size:,} bytes, over the {max_bytes:,} of any image featx decodes",
                        )
                    )
                elif extension in IMAGE_SUFFIXES:
                    current["image"], current["content"] = member.name, tar.extractfile(member).read()
                elif extension in (".cls", ".json"):
                    current["labels"].setdefault(extension, tar.extractfile(member).read())
                member_name = None
            if getattr(tar, "cut", False):
                raise EOFError(
                    "the shard ends without its end-of-archive blocks: it is truncated"
                    + (f" after member {last_read}" if last_read else "")
                )
            if current is not None:
                yield _sample(current)
    except (OSError, tarfile.TarError, EOFError, ValueError) as error:
        if current is not None and current["content"] is not None and member_name is None:
            yield _sample(current)  # its members were read whole before the cut
        raise ShardReadError(member_name, error) from error


class _EndAware(tarfile.TarInfo):
    """Notes on its archive how reading headers ended: tarfile's stream mode ends the same way at the
    end-of-archive blocks and where a shard was cut at or inside a header, and only the first is whole."""

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(archive)
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError):
            archive.cut = True  # type: ignore[attr-defined]
            raise


def _sample(fields: dict[str, Any]) -> Sample:
    labels = fields["labels"]
    label = next((_label_from(e, labels[e]) for e in (".cls", ".json") if e in labels), None)
    return Sample(
        fields["key"],
        fields["image"],
        fields["content"],
        label,
        tuple(fields["extensions"]),
        tuple(fields["unused"]),
    )


# -- Parquet tables of encoded images --------------------------------------------------------------------


def row_path(table: str, column: str, row: int) -> str:
    return f"{ROW_PREFIX}{column}/{row}::{table}"


def whole_table(paths: Sequence[str]) -> tuple[str, str] | None:
    """(table, column) when ``paths`` name every row of one table's image column in order, as a Parquet
    table given as a job's source does: then a reader of whole tables may read it, each row group once."""
    if not len(paths) or not str(paths[0]).startswith(ROW_PREFIX):
        return None
    location, _, table = str(paths[0])[len(ROW_PREFIX) :].partition("::")
    column = location.rpartition("/")[0]
    try:
        rows = int(_table(table, os.getpid())[1][-1])
    except (OSError, ValueError):
        return None
    if rows != len(paths) or any(path != row_path(table, column, row) for row, path in enumerate(paths)):
        return None
    return table, column


def cell_bytes(value: Any) -> bytes:
    """An image cell's bytes: a binary value, or the ``bytes`` of a Hugging Face Image struct
    (FileNotFoundError for an empty cell, as a missing file)."""
    if isinstance(value, dict):
        value = value.get("bytes")
    if value is None:
        raise FileNotFoundError("the cell is empty")
    return value


def image_column(schema: Any, source: str) -> str | None:
    """The column of encoded images in a table without a ``path`` column: ``image`` or the only column of
    binary values or of structs with a binary ``bytes`` field (Hugging Face's Image feature)."""
    import pyarrow as pa

    def holds_bytes(field: Any) -> bool:
        kind = field.type
        if pa.types.is_struct(kind):
            return kind.get_field_index("bytes") >= 0 and holds_bytes(kind.field("bytes"))
        return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)

    candidates = [field.name for field in schema if holds_bytes(field)]
    if "image" in schema.names and "image" not in candidates:
        raise ValueError(
            f"{source}: its 'image' column holds {schema.field('image').type}, not encoded image "
            "bytes; name a column of paths 'path'"
        )
    if "image" in candidates:
        return "image"
    if len(candidates) > 1:
        raise ValueError(
            f"{source} has several columns of bytes {candidates} and no 'path' or 'image' column; "
            "rename the one that holds the images to 'image'"
        )
    return candidates[0] if candidates else None


def _table_cell(path: str) -> bytes:
    """One cell's bytes (FileNotFoundError for an empty cell, IndexError past the end)."""
    location, _, table = path[len(ROW_PREFIX) :].partition("::")
    column, _, row_text = location.rpartition("/")
    _, starts = _table(table, os.getpid())
    row = int(row_text)
    group = max(0, int(np.searchsorted(starts, row, side="right")) - 1)
    if row < 0 or row >= starts[-1]:
        raise IndexError(f"row {row} is outside the table's {starts[-1]} rows")
    return cell_bytes(_row_group(table, column, group)[row - starts[group]])


@functools.lru_cache(maxsize=8)
def _table(table: str, process: int) -> tuple[Any, np.ndarray]:
    """The open table and the first row of each row group (plus the row count at the end), opened once
    per process (``process``: a forked worker must not share its parent's open file; see :func:`_shard_in`)."""
    import fsspec
    import pyarrow.parquet as pq

    timeouts.ensure()

    file = pq.ParquetFile(fsspec.open(table, "rb").open())
    sizes = [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)]
    return file, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


@functools.lru_cache(maxsize=2)
def _row_group(table: str, column: str, group: int) -> list[Any]:
    """One row group of the image column, as Python values: a worker reads its rows in order."""
    return _table(table, os.getpid())[0].read_row_group(group, columns=[column]).column(0).to_pylist()
