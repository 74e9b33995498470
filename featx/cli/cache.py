"""``featx cache info|verify|compact|prune``: inspect and maintain a feature cache."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

import pandas as pd

from featx.cli._common import existing_folder
from featx.options import NON_NEGATIVE, POSITIVE_INT

if TYPE_CHECKING:
    from featx.cache import FeatureCache, Namespace


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    cache = commands.add_parser("cache", help="inspect and maintain a feature cache")
    actions = cache.add_subparsers(required=True, metavar="ACTION")
    info = actions.add_parser("info", help="namespaces, vector counts, bytes")
    info.add_argument("dir", type=existing_folder)
    info.set_defaults(run=_cache_info)
    verify = actions.add_parser("verify", help="check every vector's checksum")
    verify.add_argument("dir", type=existing_folder)
    verify.add_argument(
        "--drop", action="store_true", help="remove corrupt entries (they are recomputed on demand)"
    )
    verify.set_defaults(run=_cache_verify)
    compact = actions.add_parser(
        "compact", help="merge small shards into large ones (safe beside running jobs)"
    )
    compact.add_argument("dir", type=existing_folder)
    compact.add_argument(
        "--shard-mb",
        type=POSITIVE_INT.parse,
        default=256,
        metavar="MB",
        help="size of a merged shard's vectors file (default: 256)",
    )
    compact.set_defaults(run=_cache_compact)
    prune = actions.add_parser("prune", help="remove namespaces, old shards and debris of killed writers")
    prune.add_argument("dir", type=existing_folder)
    prune.add_argument("--namespace", action="append", default=[], help="remove this namespace (repeatable)")
    prune.add_argument(
        "--older-than",
        type=NON_NEGATIVE.parse,
        metavar="DAYS",
        help="remove shards written more than DAYS ago",
    )
    prune.set_defaults(run=_cache_prune)
    return cache


def _cache_info(args: argparse.Namespace) -> int:
    from featx.cache import FeatureCache

    rows = []
    for namespace in _namespaces(FeatureCache(args.dir)):
        try:
            fingerprint = namespace.fingerprint
        except (OSError, ValueError) as error:  # one garbled namespace.json must not hide the others
            fingerprint = {"backbone": f"<unreadable namespace.json: {error}>"}
        stats = namespace.stats()
        rows.append(
            {
                **stats,
                "backbone": fingerprint.get("backbone"),
                "node": fingerprint.get("node"),
                "weights": fingerprint.get("weights"),
                "precision": fingerprint.get("precision"),
            }
        )
    if not rows:
        print(f"{args.dir}: no featx cache namespaces")
        return 0
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _cache_verify(args: argparse.Namespace) -> int:
    from featx.cache import FeatureCache

    problems, left = [], 0  # left: problems still there after the run (all of them without --drop)
    for namespace in _namespaces(FeatureCache(args.dir)):
        unreadable = _unreadable_fingerprint(namespace)
        if unreadable:  # never dropped: the shards are not proven to be anyone's, nor to be garbage
            found = [{"shard": "namespace.json", "key": None, "problem": unreadable}]
            done = " (not dropped: its shards are not proven bad, only unchecked)" if args.drop else ""
            left += 1
        else:
            found = namespace.verify(drop=args.drop)
            done = " (dropped)" if found and args.drop else ""
            left += 0 if args.drop else len(found)
        problems += [{"namespace": namespace.path.name, **p} for p in found]
        print(f"{namespace.path.name}: {len(found)} problem(s){done}")
    for problem in problems[:20]:
        print(f"  {problem['namespace']}/{problem['shard']}: {problem['problem']} {problem['key'] or ''}")
    return 1 if left else 0


def _cache_compact(args: argparse.Namespace) -> int:
    from featx.cache import FeatureCache
    from featx.cache.compact import compact

    namespaces = _namespaces(FeatureCache(args.dir))
    if not namespaces:
        print(f"{args.dir}: no featx cache namespaces")
    for namespace in namespaces:
        unreadable = _unreadable_fingerprint(namespace)
        if unreadable:
            print(f"{namespace.path.name}: not compacted: {unreadable}")
            continue
        print(f"{namespace.path.name}: {compact(namespace, shard_bytes=args.shard_mb << 20)}")
    return 0


def _cache_prune(args: argparse.Namespace) -> int:
    from featx.cache import FeatureCache

    cache = FeatureCache(args.dir)
    for name in args.namespace:
        cache.remove_namespace(name)
        print(f"removed namespace {name}")
    for namespace in _namespaces(cache):
        debris = namespace.remove_debris()
        old = (
            namespace.remove_shards_older_than(args.older_than * 86400) if args.older_than is not None else 0
        )
        print(f"{namespace.path.name}: removed {old} old shard(s), {_removed(debris)}")
    beside = cache.remove_leftovers()
    if beside:
        print(f"{cache.root}: removed {_removed(beside)}")
    return 0


def _removed(files: list[tuple[str, int]], named: int = 10) -> str:
    """What prune removed of killed writers' files: how many, how large, and (the first few) by name."""
    text = f"{len(files)} leftover file(s) of killed writers"
    if not files:
        return text
    names = ", ".join(name for name, _ in files[:named]) + (
        f" and {len(files) - named} more" if len(files) > named else ""
    )
    return f"{text} ({sum(size for _, size in files) / 1e6:.1f} MB): {names}"


def _unreadable_fingerprint(namespace: Namespace) -> str | None:
    """Why a namespace's checksums cannot be checked: they are bound to the fingerprint its
    ``namespace.json`` holds. A featx job proves the shards before it writes a new one."""
    try:
        _ = namespace.tag
    except (OSError, ValueError) as error:
        return (
            f"namespace.json is unreadable ({error}), so its checksums cannot be checked; a job of its "
            "extractor rewrites it once the shards prove to be that extractor's"
        )
    return None


def _namespaces(cache: FeatureCache) -> list[Namespace]:
    """The cache's namespaces, after a line for each symbolic link among them, which is not followed."""
    for link in cache.links():
        print(
            f"{link.name}: a symbolic link (to {os.readlink(link)}), not followed: featx cache commands "
            f"touch nothing outside {cache.root}"
        )
    return cache.namespaces()
