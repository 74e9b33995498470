"""The zoo as a table: name, family, default weights and feature size of every backbone a pattern names.

Listing names costs nothing (:func:`featx.list_backbones`); a row's feature size needs the model built on
the meta device (0.1-0.7 s per model on 2 cores), so long listings leave sizes out unless asked.
"""

from __future__ import annotations

import pandas as pd

from featx.models._registry import listing
from featx.models.nodes import feature_size

#: Listings of at most this many names compute feature sizes unless told otherwise.
SIZED_ROWS = 100

__all__ = ["SIZED_ROWS", "backbone_table"]


def backbone_table(
    pattern: str | None = None, *, pretrained: bool = False, sizes: bool | None = None
) -> pd.DataFrame:
    """One row per backbone: ``name``, ``family``, ``default_weights``, ``features`` (NaN when not computed).

    ``sizes=None`` computes sizes when at most `SIZED_ROWS` names match; ``True`` / ``False`` force it.
    """
    listed = listing(pattern, pretrained=pretrained)
    if sizes is None:
        sizes = len(listed) <= SIZED_ROWS
    table = pd.DataFrame(
        [
            {
                "name": name,
                "family": family,
                "default_weights": weights,
                "features": feature_size(name) if sizes else None,
            }
            for name, (family, weights) in sorted(listed.items())
        ],
        columns=["name", "family", "default_weights", "features"],
    )
    return table.astype({"features": "Int64"})
