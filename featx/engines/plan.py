"""The bookkeeping every engine shares: content keys, what the store lacks (once per distinct content),
and how one content's decoding failure becomes the failure of every input holding it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from tqdm.auto import tqdm

from featx.engines.base import Filled
from featx.errors import ImageError
from featx.images import content_key

if TYPE_CHECKING:
    from featx.cache import Store


def content_keys(images: Sequence[Any], progress: bool = False) -> tuple[list[str | None], list[ImageError]]:
    """The content key of every input (None where the input cannot even be read)."""
    keys: list[str | None] = []
    errors: list[ImageError] = []
    for index, image in enumerate(tqdm(images, disable=not progress, unit="img", desc="hashing", leave=False)):
        try:
            keys.append(content_key(image, index))
        except ImageError as error:
            keys.append(None)
            errors.append(error)
    return keys, errors


@dataclass
class Plan:
    """What a fill must compute: ``todo`` holds the first input index of each distinct missing key."""

    keys: list[str | None]
    unreadable: list[ImageError]
    todo: list[int]
    n_cached: int

    def finish(self, decode_errors: list[ImageError], n_computed: int) -> Filled:
        errors = sorted(self.unreadable + spread_failures(decode_errors, self.keys), key=lambda e: e.index)
        return Filled(self.keys, errors, self.n_cached, n_computed)


def plan(keys: Sequence[str | None], unreadable: list[ImageError], store: "Store") -> Plan:
    """Compare the keys with the store: which inputs to compute, and how many are already there."""
    missing = set(store.missing(key for key in keys if key is not None))
    return Plan(list(keys), list(unreadable), first_missing(keys, missing),
                n_cached=sum(1 for key in keys if key is not None and key not in missing))


def first_missing(keys: Sequence[str | None], missing: set[str] | None = None) -> list[int]:
    """The index of the first input holding each distinct key (each key in ``missing``, if given)."""
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key is not None and (missing is None or key in missing):
            first.setdefault(key, index)
    return list(first.values())


def spread_failures(decode_errors: list[ImageError], keys: Sequence[str | None]) -> list[ImageError]:
    """A decoding failure of one content is a failure of every input with that content."""
    by_key = {keys[e.index]: e for e in decode_errors}
    return [
        e if e.index == i else ImageError(i, e.source, e.kind, e.reason)
        for i, key in enumerate(keys)
        if (e := by_key.get(key)) is not None
    ]
