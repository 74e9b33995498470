"""Jobs over WebDataset shards, run as WebDataset runs them: a shard is one unit of work, streamed once,
front to back, by one decoder, which keys every sample and decodes only what the store lacks. The driver
lists shards, never their members, so it reads no image bytes and no remote shard is fetched twice; the
job's manifest is assembled from what the decoders report, in shard order."""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from featx.engines.base import Filled, no_keys
from featx.engines.keyed import key_and_decode
from featx.engines.plan import every_failure
from featx.errors import ImageError, ShardReadError
from featx.inputs import shards, sources
from featx.inputs.bounds import byte_bound
from featx.inputs.remote import read_error
from featx.models.preprocessing import Preprocessing


@dataclass(frozen=True, slots=True)  # the driver keeps one per sample: no per-instance dict
class Streamed:
    """What a decoder reports for one sample of a shard (or for a shard that failed): where it sits
    (shard number, position), its manifest fields, its content key, and its pixels, error or skip reason."""

    shard: int
    position: int
    path: str  # the image member (tar://member::shard); the shard itself for a shard that failed
    sample: str
    label: str | None
    key: str | None = None
    pixels: Any = None  # decoded uint8 pixels, only for content the store lacks
    error: ImageError | None = None
    skipped: str | None = None  # why a sample without an image member is left out


def stream_shard(
    number: int, shard: str, known: Container[str], preprocessing: Preprocessing, max_pixels: int
) -> Iterator[Streamed]:
    """Every sample of one shard, keyed, decoded where ``known`` lacks its key; a shard that cannot be read
    (or ends early) ends with one failed entry naming the shard and the member it was reading."""
    position = 0
    try:
        for sample in shards.stream_samples(shard, byte_bound(max_pixels)):
            for member, why in sample.unused:  # recorded beside the sample, never dropped in silence
                yield Streamed(
                    number, position, sources.member_path(shard, member), sample.key, None, skipped=why
                )
            if sample.image is None:
                yield Streamed(
                    number,
                    position,
                    sources.member_path(shard, sample.key),
                    sample.key,
                    sample.label,
                    skipped=f"no image member (members: {sorted(sample.extensions)})",
                )
                continue
            path = sources.member_path(shard, sample.image)
            key, pixels, error = key_and_decode(
                lambda content=sample.content: content, position, path, known, preprocessing, max_pixels
            )
            yield Streamed(number, position, path, sample.key, sample.label, key, pixels, error)
            position += 1
    except ShardReadError as failure:
        error = read_error(position, shard, failure.cause, attempts=1)  # streamed once: a rerun resumes it
        if failure.member:
            error = ImageError(
                position, shard, error.kind, f"{error.reason} (reading member {failure.member})"
            )
        yield Streamed(number, position, shard, "", None, error=error)


def assemble(
    entries: Iterable[Streamed], shards: list[str], n_cached: int, n_computed: int
) -> tuple[pd.DataFrame, Filled]:
    """The job's manifest (path, sample, shard, label; samples without an image in ``attrs["skipped"]``)
    and its outcome, in shard order, from decoders' reports that arrived in any order, without pixels."""
    ordered = sorted(entries, key=lambda e: (e.shard, e.position, e.skipped is None))
    kept = [e for e in ordered if e.skipped is None]
    frame = pd.DataFrame(
        {
            "path": [e.path for e in kept],
            "sample": [e.sample for e in kept],
            "shard": [shards[e.shard] for e in kept],
            "label": [e.label for e in kept],
        },
        columns=["path", "sample", "shard", "label"],
    )
    if frame["label"].isna().all():
        frame = frame.drop(columns="label")
    frame.attrs["skipped"] = [(e.path, e.skipped) for e in ordered if e.skipped is not None]
    keys = no_keys(len(kept))
    failures = []
    for row, entry in enumerate(kept):
        if entry.key is not None:
            keys[row] = entry.key
        if entry.error is not None:
            failures.append(entry.error.at(row))
    return frame, Filled(
        keys, every_failure(failures, keys, lambda row: kept[row].path), n_cached, n_computed
    )


def without_pixels(entry: Streamed) -> Streamed:
    return replace(entry, pixels=None) if entry.pixels is not None else entry
