"""How featx's estimators pickle: without what they load (a network, weights on a device), which they
load again where they are unpickled, and with the registry entry of a backbone the user registered by
name, which joblib's fresh worker processes would not otherwise know."""

from __future__ import annotations

from typing import Any, ClassVar

from featx.models._registry import adopt, registered_here


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
            state["_registered_backbone"] = entry
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        entry = state.pop("_registered_backbone", None)
        if entry is not None:
            adopt(entry)
        super().__setstate__(state)  # type: ignore[misc]
