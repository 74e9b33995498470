"""``featx backbones``: every backbone by name, with its default node, feature size and weights."""

from __future__ import annotations

import argparse

import pandas as pd


def add_parser(commands: argparse._SubParsersAction) -> None:
    backbones = commands.add_parser("backbones", help="list backbones: default node, feature size, weights")
    backbones.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from featx.models._registry import get_backbone, list_backbones
    from featx.models.network import feature_size

    rows = []
    for name in list_backbones():
        spec = get_backbone(name)
        rows.append(
            {
                "backbone": name,
                "node": spec.node,
                "pooling": spec.pooling,
                "features": feature_size(spec),
                "default weights": spec.default_weights or "-",
                "input": f"{spec.preprocessing.crop}px",
            }
        )
    print(pd.DataFrame(rows).to_string(index=False))
    return 0
