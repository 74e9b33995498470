"""How featx's estimators pickle: without what they load (a network, weights on a device), which they
load again where they are unpickled, and with the registry entry of a backbone the user registered by
name, which joblib's fresh worker processes and a later session would not otherwise know."""

from __future__ import annotations

import contextlib
import pickle
import warnings
from typing import Any, ClassVar

import cloudpickle

from featx.models._registry import adopt, is_registered, registered_here


class PicklesLight:
    """Mixin for an estimator with a ``backbone`` parameter: ``_TRANSIENT`` names the attributes that
    are loaded on use and never pickled."""

    _TRANSIENT: ClassVar[tuple[str, ...]] = ()

    def __getstate__(self) -> dict[str, Any]:
        # scikit-learn's (object's, then its version): the instance's own __dict__, so copy before popping
        state = dict(super().__getstate__())  # type: ignore[misc]
        for name in self._TRANSIENT:
            state.pop(name, None)
        entry = registered_here(state.get("backbone"))
        if entry is not None:
            # by value: a build function of a notebook's __main__, or a lambda, travels; what cannot stays
            with contextlib.suppress(Exception):  # (a backbone='module:ATTRIBUTE' reference still works)
                state["_registered_backbone"] = cloudpickle.dumps(entry)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        carried = state.pop("_registered_backbone", None)
        name = state.get("backbone")
        if carried is not None and not is_registered(name):
            try:
                adopt(pickle.loads(carried))
            except Exception as error:  # noqa: BLE001  (the estimator still loads; its backbone is unknown)
                warnings.warn(
                    f"the backbone {name!r} registered where this estimator was pickled could not be "
                    f"restored here ({type(error).__name__}: {error}); register it, or pass "
                    "backbone='package.module:ATTRIBUTE'",
                    stacklevel=2,
                )
        super().__setstate__(state)  # type: ignore[misc]
