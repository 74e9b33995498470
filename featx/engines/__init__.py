"""Engines fill a :class:`featx.cache.Store` with the vectors of a sequence of images.

``local`` runs DataLoader decoding workers and the network in this process (:mod:`featx.engines.local.engine`);
``ray`` runs Ray Data tasks and actors (:mod:`featx.engines.ray.engine`, an optional extra). Both read each
input once where they decode, share one bookkeeping step (:mod:`featx.engines.plan`: de-duplication,
spreading failures) and commit shard by shard through ``Store.write``, so a cache filled by one engine is read by every door.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from featx.engines.base import Engine, Filled, RunOptions
from featx.errors import ParameterError
from featx.options import ENGINES, check

__all__ = ["Engine", "Filled", "RunOptions", "get"]

_CLASSES = {
    "local": ("featx.engines.local.engine", "LocalEngine"),
    "ray": ("featx.engines.ray.engine", "RayEngine"),
}


def get(name: str = "local", **options: Any) -> Engine:
    """The engine called ``name`` ('local' or 'ray'), built with ``options`` (e.g. Ray's ``address``)."""
    unknown = sorted(set(options) - set(option_names(name)))
    if unknown:
        raise ParameterError(
            f"the {name} engine has no option {', '.join(map(repr, unknown))} "
            f"(its options: {', '.join(option_names(name)) or 'none'})"
        )
    return _engine_class(name)(**options)


def option_names(name: str) -> tuple[str, ...]:
    """What :func:`get` takes for the engine called ``name``, besides the name."""
    return tuple(inspect.signature(_engine_class(name)).parameters)


def _engine_class(name: str) -> type:
    check("engine", name, ENGINES)
    module, cls = _CLASSES[name]
    return getattr(importlib.import_module(module), cls)
