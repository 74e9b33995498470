"""``featx backbones``: every backbone by name, with its family, default weights and feature size."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    backbones = commands.add_parser(
        "backbones",
        help="list backbones (torchvision's, timm's as timm/NAME.TAG, featx's): family, weights, feature size",
    )
    backbones.add_argument(
        "--filter", metavar="PATTERN", help="shell pattern, e.g. 'convnext*' (matches timm/convnext* too)"
    )
    backbones.add_argument("--pretrained", action="store_true", help="only names with pretrained weights")
    backbones.add_argument(
        "--sizes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compute feature sizes (default: when at most 100 names are listed; each takes 0.1-0.7 s)",
    )
    backbones.set_defaults(run=run)
    return backbones


def run(args: argparse.Namespace) -> int:
    from featx.models.catalog import backbone_table

    table = backbone_table(args.filter, pretrained=args.pretrained, sizes=args.sizes)
    if table.empty:
        print(f"no backbone matches {args.filter!r}; featx backbones lists them all")
        return 1
    sized = table["features"].notna().any()
    print(
        table.fillna({"default_weights": "-"}).to_string(
            index=False, columns=None if sized else list(table.columns[:3])
        )
    )
    if not sized:
        print(f"{len(table)} backbones; feature sizes for at most 100 (narrow with --filter) or with --sizes")
    return 0
