"""The ``featx`` command: list backbones, run the caching job, compare classifiers, maintain the cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from featx.cli_compare import progress_wanted, run_compare
from featx.errors import FeatxError
from featx.feature_files import printable_path
from featx.images import MAX_PIXELS
from featx.options import (
    COMPILE_WORDS,
    DECODINGS,
    ENGINES,
    JOB_ON_ERROR,
    POOLINGS,
    PRECISIONS,
    check_positive_int,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished batches are cached; run the same command again to resume", file=sys.stderr)
        return 130
    except (FeatxError, OSError, ImportError) as error:
        # featx's own errors and the OS errors a job expects (a full disk, a read-only folder) end in one
        # line; anything else is a bug and keeps its traceback.
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
    extract.add_argument("--pooling", choices=POOLINGS)
    extract.add_argument("--batch-size", type=int, default=64)
    extract.add_argument("--num-workers", type=int, help="decoding processes (default: from job size and cores)")
    extract.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    extract.add_argument("--precision", default="auto", choices=PRECISIONS,
                         help="auto: measured here (see featx tune); int8: CPU only, checked against fp32")
    extract.add_argument("--min-cosine", type=float, default=0.99,
                         help="fidelity to fp32 that auto and int8 must keep (default 0.99)")
    extract.add_argument("--calibration", metavar="SOURCE",
                         help="int8: calibrate and check fidelity on these images (a folder, manifest, shards or "
                              "table like SOURCE; default: bundled real photos)")
    extract.add_argument("--compile", default="auto", choices=list(COMPILE_WORDS),
                         help="torch.compile the network (auto: when >= 10000 images need computing)")
    extract.add_argument("--on-error", default="skip", choices=JOB_ON_ERROR)
    extract.add_argument("--decoding", default="reduced", choices=DECODINGS,
                         help="reduced: big JPEGs decoded at a reduced DCT scale (never below the resize); full: every pixel")
    extract.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                         help="refuse images with more pixels, decoded or resized (default: PIL's bomb limit)")
    extract.add_argument("--errors", help="CSV listing every failed image (default: next to --out, if any fail)")
    extract.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    extract.add_argument("--engine", default="local", choices=ENGINES,
                         help="local: DataLoader workers; ray: Ray Data tasks and actors (pip install 'featx[ray]')")
    extract.add_argument("--ray-address", help="join this Ray cluster ('auto': the running one); default: start one")
    extract.add_argument("--ray-concurrency", type=int, help="model actors (default: one per GPU, else one)")
    extract.set_defaults(run=_extract)

    compare = commands.add_parser(
        "compare", help="cross-validate classifiers on features; --report: did transfer help at all?")
    compare.add_argument("source", help="a features file from `featx extract --out`, or a folder / manifest of images")
    compare.add_argument("--backbone", action="append",
                         help="backbone (repeat for several in the report; default: the features file's, or resnet50)")
    compare.add_argument("--weights", default="DEFAULT", help="DEFAULT, a weights name or a file")
    compare.add_argument("--layer", help="graph node for the comparison (default: the last pooling layer)")
    compare.add_argument("--cache", default=".featx-cache", help="feature cache directory (default: .featx-cache)")
    compare.add_argument("--classifiers", default="logreg,linsvm,svm,knn,rf", help="comma-separated names")
    compare.add_argument("--cv", default="5", help="number of stratified folds, or 'split' for the manifest's split")
    compare.add_argument("--tune", action="store_true", help="grid-search each classifier's regularisation (nested)")
    compare.add_argument("--out", help="write the comparison table to FILE.csv (the report to FILE.transfer.csv)")
    compare.add_argument("--html", help="write one self-contained page (tables, verdict, figures, setup) to FILE.html")
    compare.add_argument("--plot", help="write accuracies, the best one's confusion matrix (and the report) to FILE.png")
    compare.add_argument("--report", action="store_true",
                         help="transfer report: pretrained features vs raw pixels and random weights, same folds")
    compare.add_argument("--layers", default=None,
                         help="report: 'stages' for early/middle/last layers, or comma-separated nodes")
    compare.add_argument("--finetune", action="store_true",
                         help="add fine-tuned rows: a new head on the frozen base, then the last blocks unfrozen")
    compare.add_argument("--unfreeze", type=int, default=2, help="--finetune: blocks to unfreeze (default 2)")
    compare.add_argument("--finetune-folds", type=int, default=1,
                         help="--finetune: folds to train on (default 1: minutes per fold on a CPU)")
    compare.add_argument("--n-jobs", type=int, help="folds fitted in parallel (default 1)")
    compare.add_argument("--batch-size", type=int, default=64)
    compare.add_argument("--device", default="auto")
    compare.add_argument("--precision", default="auto", choices=PRECISIONS)
    compare.add_argument("--quiet", action="store_true", help="no progress bar")
    compare.set_defaults(run=run_compare)

    tune = commands.add_parser("tune", help="show (measuring once, if needed) the precision 'auto' picks here, and why")
    tune.add_argument("--backbone", default="resnet50")
    tune.add_argument("--weights", default="DEFAULT", help="DEFAULT, a weights name, a file, or none (random init)")
    tune.add_argument("--layer", help="graph node (default: the last pooling layer)")
    tune.add_argument("--device", default="auto")
    tune.add_argument("--again", action="store_true", help="forget the remembered result and measure again")
    tune.set_defaults(run=_tune)

    cache = commands.add_parser("cache", help="inspect and maintain a feature cache")
    actions = cache.add_subparsers(required=True, metavar="ACTION")
    info = actions.add_parser("info", help="namespaces, vector counts, bytes")
    info.add_argument("dir")
    info.set_defaults(run=_cache_info)
    verify = actions.add_parser("verify", help="check every vector's checksum")
    verify.add_argument("dir")
    verify.add_argument("--drop", action="store_true", help="remove corrupt entries (they are recomputed on demand)")
    verify.set_defaults(run=_cache_verify)
    compact = actions.add_parser("compact", help="merge small shards into large ones (safe beside running jobs)")
    compact.add_argument("dir")
    compact.add_argument("--shard-mb", type=int, default=256, metavar="MB",
                         help="size of a merged shard's vectors file (default: 256)")
    compact.set_defaults(run=_cache_compact)
    prune = actions.add_parser("prune", help="remove namespaces, old shards and debris of killed writers")
    prune.add_argument("dir")
    prune.add_argument("--namespace", action="append", default=[], help="remove this namespace (repeatable)")
    prune.add_argument("--older-than", type=float, metavar="DAYS", help="remove shards written more than DAYS ago")
    prune.set_defaults(run=_cache_prune)
    return parser


def _backbones(args: argparse.Namespace) -> int:
    from featx.network import feature_size
    from featx.registry import get_backbone, list_backbones

    rows = []
    for name in list_backbones():
        spec = get_backbone(name)
        rows.append({"backbone": name, "node": spec.node, "pooling": spec.pooling,
                     "features": feature_size(spec), "default weights": spec.default_weights or "-",
                     "input": f"{spec.preprocessing.crop}px"})
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _tune(args: argparse.Namespace) -> int:
    from featx import tuning
    from featx.network import FrozenNetwork, NetworkSpec

    spec = NetworkSpec(args.backbone, args.weights, args.layer, None, args.device)
    if args.again:
        network = FrozenNetwork(spec.replace(precision="fp32"))
        identity = {k: v for k, v in network.fingerprint.items() if k != "precision"}
        tuning.forget(tuning.tuning_key(network.device, identity))
    network = FrozenNetwork(spec)
    choice = network.precision_choice
    print(f"{network.backbone.name} on {tuning.device_model(network.device)} ({network.device}): "
          f"precision {choice['precision']}")
    print(f"why: {choice['why']}")
    print(f"decided: {choice.get('decided', '?')}; remembered in {tuning.tuning_path()}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from featx import engines
    from featx.cache import FeatureCache
    from featx.datasets import load_job_source
    from featx.feature_files import check_output_path
    from featx.job import run_extract_job, write_errors
    from featx.network import NetworkSpec
    from featx.sources import Shards

    manifest = load_job_source(args.source)
    # outputs are checked before the network loads: a typo or a read-only folder costs nothing
    if args.out:
        check_output_path(args.out)
    if args.errors:
        check_output_path(args.errors, (".csv",), "--errors")
    options = {"address": args.ray_address, "concurrency": args.ray_concurrency} if args.engine == "ray" else {}
    engine = engines.get(args.engine, **options)
    network = engine.network(NetworkSpec(args.backbone, args.weights, args.layer, args.pooling, args.device,
                                         args.precision, COMPILE_WORDS[args.compile], args.decoding,
                                         args.min_cosine, args.calibration))
    namespace = FeatureCache(args.cache).namespace(network.fingerprint)
    inputs = f"{len(manifest.names)} shards" if isinstance(manifest, Shards) else f"{len(manifest)} images"
    print(f"{inputs} -> {network.backbone.name} [{network.weights_description}] "
          f"node {network.node} ({network.n_features} features, {network.pooling}), "
          f"{network.device} {network.precision}; cache {namespace.path}", file=sys.stderr)
    summary = run_extract_job(
        manifest, network, namespace, batch_size=args.batch_size, num_workers=args.num_workers,
        on_error=args.on_error, out=args.out, progress=progress_wanted(args), engine=engine,
        max_pixels=args.max_pixels,
    )
    errors_path = args.errors
    if errors_path is None and (summary.errors or summary.skipped):  # never lose the list of failures
        errors_path = Path(args.out).with_suffix(".errors.csv") if args.out else Path("featx-errors.csv")
    print(summary)
    if errors_path:
        write_errors(errors_path, summary.errors, summary.skipped)
        print(f"errors: {errors_path} ({len(summary.errors)} failed, {len(summary.skipped)} skipped entries listed)")
    for error in summary.errors[:5]:
        print(f"  failed {printable_path(error.source)}: {error.kind}: {error.reason}", file=sys.stderr)
    return 0


def _cache_info(args: argparse.Namespace) -> int:
    from featx.cache import FeatureCache

    rows = []
    for namespace in FeatureCache(args.dir).namespaces():
        try:
            fingerprint = namespace.fingerprint
        except (OSError, ValueError) as error:  # one garbled namespace.json must not hide the others
            fingerprint = {"backbone": f"<unreadable namespace.json: {error}>"}
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


def _cache_compact(args: argparse.Namespace) -> int:
    from featx.cache import FeatureCache
    from featx.cache.compact import compact

    check_positive_int("--shard-mb", args.shard_mb, "featx cache compact")
    namespaces = FeatureCache(args.dir).namespaces()
    if not namespaces:
        print(f"{args.dir}: no featx cache namespaces")
    for namespace in namespaces:
        print(f"{namespace.path.name}: {compact(namespace, shard_bytes=args.shard_mb << 20)}")
    return 0


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
