"""The bookkeeping every engine shares once each input has its content key: which inputs to compute (once
per distinct content), and how one content's decoding failure becomes the failure of every input holding it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
