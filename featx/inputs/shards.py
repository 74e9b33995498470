"""WebDataset tar shards as a source: expanding a pattern or folder into shards, listing their samples
(:func:`shard_manifest`, for the transformer and ``featx compare``), and streaming them front to back
(:func:`stream_samples`), as the batch job does, so that a remote shard is fetched once and never indexed.
A sample's members are consecutive, as WebDataset writes them; the rule that picks its image member is
:mod:`featx.inputs.tar_members`'.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from featx.errors import ParameterError, ShardReadError
from featx.inputs import remote_files, timeouts
from featx.inputs.sources import indexed_shard, is_url, member_path, with_protocol
from featx.inputs.suffixes import IMAGE_SUFFIXES, SHARD_SUFFIXES
from featx.inputs.tar_members import IndexedShard, key_and_extension, unused_because


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
        index = indexed_shard(shard)
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
        bounded = remote_files.open_shard(shard, streamed=True)
        opened = bounded if bounded is not None else fsspec.open(shard, "rb")
        with opened as raw, tarfile.open(fileobj=raw, mode="r|*", tarinfo=_EndAware) as tar:
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
