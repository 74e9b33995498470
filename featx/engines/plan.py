"""The bookkeeping every engine shares once each input has its content key: which inputs to read (once per
path) and compute (once per distinct content), and how one content's decoding failure becomes the failure
of every input holding it."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from featx.errors import ImageError


def first_missing(keys: Sequence[str | None], missing: set[str] | None = None) -> list[int]:
    """The index of the first input holding each distinct key (each key in ``missing``, if given)."""
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key is not None and (missing is None or key in missing):
            first.setdefault(key, index)
    return list(first.values())


def every_failure(
    failures: list[ImageError], keys: np.ndarray, name_of: Callable[[int], str] | None = None
) -> list[ImageError]:
    """All failures in input order, from each engine's own: an input that could not be read (no key in
    ``keys``, the engines' array of 64-byte keys) fails alone; a decoding failure of one content is a
    failure of every input with that content, each under its own name (``name_of(index)``), so that
    files with the same bytes each get their own row."""
    by_key = {bytes(keys[e.index]): e for e in failures if keys[e.index]}
    holders = np.flatnonzero(np.isin(keys, list(by_key))).tolist() if by_key else []
    spread = [by_key[bytes(keys[i])].at(i, name_of(i) if name_of else None) for i in holders]
    return sorted([e for e in failures if not keys[e.index]] + spread, key=lambda e: e.index)


def once_per_path(images: Sequence[Any], todo: list[int]) -> tuple[list[int], dict[int, list[int]]]:
    """Each path in ``todo`` once (a manifest naming one file a million times reads it once), and for
    each path kept, the later inputs that name it again."""
    first: dict[str, int] = {}
    kept, repeats = [], {}
    for index in todo:
        image = images[index]
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            if path in first:
                repeats.setdefault(first[path], []).append(index)
                continue
            first[path] = index
        kept.append(index)
    return kept, repeats


def share_with_repeats(
    repeats: dict[int, list[int]],
    keys: np.ndarray,
    failures: list[ImageError],
    name_of: Callable[[int], str],
) -> int:
    """Give each repeated path its first reading's key, or that reading's failure under its own index and
    name (a content that failed to decode reaches every holder of its key through ``every_failure``).
    Returns how many repeats were served from what the first reading computed or found."""
    unread = {e.index: e for e in failures if not keys[e.index]}
    undecodable = {bytes(keys[e.index]) for e in failures if keys[e.index]}
    served = 0
    for first, indices in repeats.items():
        for index in indices:
            if first in unread:
                failures.append(unread[first].at(index, name_of(index)))
            else:
                keys[index] = keys[first]
                served += bytes(keys[first]) not in undecodable
    return served
