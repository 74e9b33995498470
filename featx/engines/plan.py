"""The bookkeeping every engine shares once each input has its content key: which inputs to compute (once
per distinct content), and how one content's decoding failure becomes the failure of every input holding it."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from featx.errors import ImageError


def first_missing(keys: Sequence[str | None], missing: set[str] | None = None) -> list[int]:
    """The index of the first input holding each distinct key (each key in ``missing``, if given)."""
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key is not None and (missing is None or key in missing):
            first.setdefault(key, index)
    return list(first.values())


def spread_failures(decode_errors: list[ImageError], keys: np.ndarray) -> list[ImageError]:
    """A decoding failure of one content is a failure of every input with that content (``keys``: the
    engines' array of 64-byte keys)."""
    if not decode_errors:
        return []
    by_key = {bytes(keys[e.index]): e for e in decode_errors}
    return [
        e if e.index == i else ImageError(i, e.source, e.kind, e.reason)
        for i in np.flatnonzero(np.isin(keys, list(by_key))).tolist()
        for e in (by_key[bytes(keys[i])],)
    ]
