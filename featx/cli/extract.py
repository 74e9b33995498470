"""``featx extract``: the batch caching job, from a folder, manifest, shards or table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from featx.cli._common import progress_wanted
from featx.feature_files import printable_path
from featx.inputs.images import MAX_PIXELS
from featx.options import COMPILE_WORDS, DECODINGS, ENGINES, JOB_ON_ERROR, POOLINGS, PRECISIONS


def add_parser(commands: argparse._SubParsersAction) -> None:
    extract = commands.add_parser("extract", help="cache the features of a folder or manifest of images")
    extract.add_argument(
        "source", help="a folder (class sub-folders give labels) or a CSV / Parquet manifest"
    )
    extract.add_argument("--backbone", default="resnet50")
    extract.add_argument("--cache", required=True, help="feature cache directory (shared with cache_dir=)")
    extract.add_argument(
        "--out", help="write path, label, split, key and vectors to FILE.parquet or FILE.npy"
    )
    extract.add_argument(
        "--weights", default="DEFAULT", help="DEFAULT, a weights name, a file, or none (random init)"
    )
    extract.add_argument("--layer", help="graph node to read (default: the last pooling layer)")
    extract.add_argument("--pooling", choices=POOLINGS)
    extract.add_argument("--batch-size", type=int, default=64)
    extract.add_argument(
        "--num-workers", type=int, help="decoding processes (default: from job size and cores)"
    )
    extract.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    extract.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: measured here (see featx tune); int8: CPU only, checked against fp32",
    )
    extract.add_argument(
        "--min-cosine",
        type=float,
        default=0.99,
        help="fidelity to fp32 that auto and int8 must keep (default 0.99)",
    )
    extract.add_argument(
        "--calibration",
        metavar="SOURCE",
        help="int8: calibrate and check fidelity on these images (a folder, manifest, shards or "
        "table like SOURCE; default: bundled real photos)",
    )
    extract.add_argument(
        "--compile",
        default="auto",
        choices=list(COMPILE_WORDS),
        help="torch.compile the network (auto: when >= 10000 images need computing)",
    )
    extract.add_argument("--on-error", default="skip", choices=JOB_ON_ERROR)
    extract.add_argument(
        "--decoding",
        default="reduced",
        choices=DECODINGS,
        help="reduced: big JPEGs decoded at a reduced DCT scale (never below the resize); full: every pixel",
    )
    extract.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help="refuse images with more pixels, decoded or resized (default: PIL's bomb limit)",
    )
    extract.add_argument(
        "--errors", help="CSV listing every failed image (default: next to --out, if any fail)"
    )
    extract.add_argument(
        "--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)"
    )
    extract.add_argument(
        "--engine",
        default="local",
        choices=ENGINES,
        help="local: DataLoader workers; ray: Ray Data tasks and actors (pip install 'featx[ray]')",
    )
    extract.add_argument(
        "--ray-address", help="join this Ray cluster ('auto': the running one); default: start one"
    )
    extract.add_argument("--ray-concurrency", type=int, help="model actors (default: one per GPU, else one)")
    extract.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from featx import engines
    from featx.cache import FeatureCache
    from featx.feature_files import check_output_path
    from featx.inputs.manifests import load_job_source
    from featx.inputs.sources import Shards
    from featx.job import run_extract_job, write_errors
    from featx.models.network import NetworkSpec

    manifest = load_job_source(args.source)
    # outputs are checked before the network loads: a typo or a read-only folder costs nothing
    if args.out:
        check_output_path(args.out)
    if args.errors:
        check_output_path(args.errors, (".csv",), "--errors")
    options = (
        {"address": args.ray_address, "concurrency": args.ray_concurrency} if args.engine == "ray" else {}
    )
    engine = engines.get(args.engine, **options)
    network = engine.network(
        NetworkSpec(
            args.backbone,
            args.weights,
            args.layer,
            args.pooling,
            args.device,
            args.precision,
            COMPILE_WORDS[args.compile],
            args.decoding,
            args.min_cosine,
            args.calibration,
        )
    )
    namespace = FeatureCache(args.cache).namespace(network.fingerprint)
    inputs = f"{len(manifest.names)} shards" if isinstance(manifest, Shards) else f"{len(manifest)} images"
    print(
        f"{inputs} -> {network.backbone.name} [{network.weights_description}] "
        f"node {network.node} ({network.n_features} features, {network.pooling}), "
        f"{network.device} {network.precision}; cache {namespace.path}",
        file=sys.stderr,
    )
    summary = run_extract_job(
        manifest,
        network,
        namespace,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        on_error=args.on_error,
        out=args.out,
        progress=progress_wanted(args),
        engine=engine,
        max_pixels=args.max_pixels,
    )
    errors_path = args.errors
    if errors_path is None and (summary.errors or summary.skipped):  # never lose the list of failures
        errors_path = Path(args.out).with_suffix(".errors.csv") if args.out else Path("featx-errors.csv")
    print(summary)
    if errors_path:
        write_errors(errors_path, summary.errors, summary.skipped)
        print(
            f"errors: {errors_path} ({len(summary.errors)} failed, {len(summary.skipped)} skipped entries listed)"
        )
    for error in summary.errors[:5]:
        print(f"  failed {printable_path(error.source)}: {error.kind}: {error.reason}", file=sys.stderr)
    return 0
