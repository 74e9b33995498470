"""The ``featx`` command: list backbones, run the caching job, maintain the cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished batches are cached; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        print(f"featx: error: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featx", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    backbones = commands.add_parser("backbones", help="list backbones: default node, feature size, weights")
    backbones.set_defaults(run=_backbones)

    extract = commands.add_parser("extract", help="cache the features of a folder or manifest of images")
    extract.add_argument("source", help="a folder (class sub-folders give labels) or a CSV / Parquet manifest")
    extract.add_argument("--backbone", default="resnet50")
    extract.add_argument("--cache", required=True, help="feature cache directory (shared with cache_dir=)")
    extract.add_argument("--out", help="write path, label, split, key and vectors to FILE.parquet or FILE.npy")
    extract.add_argument("--weights", default="DEFAULT", help="DEFAULT, a weights name, a file, or none (random init)")
    extract.add_argument("--layer", help="graph node to read (default: the last pooling layer)")
    extract.add_argument("--pooling", choices=["flatten", "avg", "max"])
    extract.add_argument("--batch-size", type=int, default=64)
    extract.add_argument("--num-workers", type=int, help="decoding processes (default: from job size and cores)")
    extract.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    extract.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    extract.add_argument("--on-error", default="skip", choices=["skip", "raise"])
    extract.add_argument("--errors", help="CSV listing every failed image (default: next to --out, if any fail)")
    extract.add_argument("--quiet", action="store_true", help="no progress bar")
    extract.set_defaults(run=_extract)

    cache = commands.add_parser("cache", help="inspect and maintain a feature cache")
    actions = cache.add_subparsers(required=True, metavar="ACTION")
    info = actions.add_parser("info", help="namespaces, vector counts, bytes")
    info.add_argument("dir")
    info.set_defaults(run=_cache_info)
    verify = actions.add_parser("verify", help="check every vector's checksum")
    verify.add_argument("dir")
    verify.add_argument("--drop", action="store_true", help="remove corrupt entries (they are recomputed on demand)")
    verify.set_defaults(run=_cache_verify)
    prune = actions.add_parser("prune", help="remove namespaces, old shards and debris of killed writers")
    prune.add_argument("dir")
    prune.add_argument("--namespace", action="append", default=[], help="remove this namespace (repeatable)")
    prune.add_argument("--older-than", type=float, metavar="DAYS", help="remove shards written more than DAYS ago")
    prune.set_defaults(run=_cache_prune)
    return parser


def _backbones(args: argparse.Namespace) -> int:
    from featx.backbones import get_backbone, list_backbones
    from featx.extract import feature_size

    rows = []
    for name in list_backbones():
        spec = get_backbone(name)
        rows.append({"backbone": name, "node": spec.node, "pooling": spec.pooling,
                     "features": feature_size(spec), "default weights": spec.default_weights or "-",
                     "input": f"{spec.preprocessing.crop}px"})
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _extract(args: argparse.Namespace) -> int:
    from featx.cache import FeatureCache
    from featx.datasets import load_manifest
    from featx.extract import FrozenNetwork
    from featx.job import run_extract_job, write_errors

    manifest = load_manifest(args.source)
    network = FrozenNetwork(args.backbone, args.weights, args.layer, args.pooling, args.device, args.precision)
    namespace = FeatureCache(args.cache).namespace(network.fingerprint)
    print(f"{len(manifest)} images -> {network.backbone.name} [{network.weights_description}] "
          f"node {network.node} ({network.n_features} features, {network.pooling}), "
          f"{network.device} {network.precision}; cache {namespace.path}", file=sys.stderr)
    summary = run_extract_job(
        manifest, network, namespace, batch_size=args.batch_size, num_workers=args.num_workers,
        on_error=args.on_error, out=args.out, progress=not args.quiet,
    )
    errors_path = args.errors
    if errors_path is None and summary.errors:  # never lose the list of failures
        errors_path = Path(args.out).with_suffix(".errors.csv") if args.out else Path("featx-errors.csv")
    print(summary)
    if errors_path:
        write_errors(errors_path, summary.errors)
        print(f"errors: {errors_path} ({len(summary.errors)} listed)")
    for error in summary.errors[:5]:
        print(f"  skipped {error.source}: {error.kind}: {error.reason}", file=sys.stderr)
    return 0


def _cache_info(args: argparse.Namespace) -> int:
    from featx.cache import FeatureCache

    rows = []
    for namespace in FeatureCache(args.dir).namespaces():
        fingerprint = namespace.fingerprint
        stats = namespace.stats()
        rows.append({**stats, "backbone": fingerprint.get("backbone"), "node": fingerprint.get("node"),
                     "weights": fingerprint.get("weights"), "precision": fingerprint.get("precision")})
    if not rows:
        print(f"{args.dir}: no featx cache namespaces")
        return 0
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _cache_verify(args: argparse.Namespace) -> int:
    from featx.cache import FeatureCache

    problems = []
    for namespace in FeatureCache(args.dir).namespaces():
        found = namespace.verify(drop=args.drop)
        problems += [{"namespace": namespace.path.name, **p} for p in found]
        print(f"{namespace.path.name}: {len(found)} problem(s){' (dropped)' if found and args.drop else ''}")
    for problem in problems[:20]:
        print(f"  {problem['namespace']}/{problem['shard']}: {problem['problem']} {problem['key'] or ''}")
    return 1 if problems and not args.drop else 0


def _cache_prune(args: argparse.Namespace) -> int:
    from featx.cache import FeatureCache

    cache = FeatureCache(args.dir)
    for name in args.namespace:
        cache.remove_namespace(name)
        print(f"removed namespace {name}")
    for namespace in cache.namespaces():
        debris = namespace.remove_debris()
        old = namespace.remove_shards_older_than(args.older_than * 86400) if args.older_than is not None else 0
        print(f"{namespace.path.name}: removed {old} old shard(s), {debris} leftover file(s) of killed writers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
