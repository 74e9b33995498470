"""``featx extract``: the batch caching job, from a folder, manifest, shards or table."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from featx.cli._common import one_line, progress_wanted
from featx.errors import OutputError, ParameterError
from featx.options import (
    COUNT,
    ENGINES,
    JOB_ON_ERROR,
)

if TYPE_CHECKING:
    from featx.job import JobSummary


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    extract = commands.add_parser("extract", help="cache the features of a folder or manifest of images")
    extract.add_argument(
        "source", help="a folder (class sub-folders give labels) or a CSV / Parquet manifest"
    )
    extract.add_argument("--cache", required=True, help="feature cache directory (shared with cache_dir=)")
    extract.add_argument(
        "--out", help="write path, label, split, key and vectors to FILE.parquet or FILE.npy"
    )
    extract.add_argument("--on-error", default="skip", choices=JOB_ON_ERROR)
    extract.add_argument(
        "--read-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="longest wait for a connection or between bytes of a network read, before one retry and then "
        "an error row; each attempt also ends after this plus 1 s per MB received (default: "
        "$FEATX_READ_TIMEOUT, else 60)",
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
    extract.add_argument(
        "--ray-concurrency", type=COUNT.parse, help="model actors (default: one per GPU, else one)"
    )
    extract.set_defaults(run=run)
    return extract


def run(args: argparse.Namespace) -> int:
    from featx import engines
    from featx.cache import FeatureCache
    from featx.cli._network import network_spec, run_options
    from featx.feature_files import check_output_path
    from featx.inputs.manifests import load_job_source
    from featx.inputs.shards import Shards
    from featx.inputs.timeouts import read_timeout, set_read_timeout
    from featx.job import run_extract_job

    if args.read_timeout is not None:  # before the source is listed: a remote folder is read too
        set_read_timeout(args.read_timeout)
    else:
        read_timeout()  # a bad FEATX_READ_TIMEOUT is one line now, whatever the manifest names
    manifest = load_job_source(args.source)
    # outputs are checked before the network loads: a typo or a read-only folder costs nothing
    if args.out:
        check_output_path(args.out)
    if args.errors:
        check_output_path(args.errors, (".csv",), "--errors")
    _refuse_outputs_that_overwrite(args)
    options = (
        {"address": args.ray_address, "concurrency": args.ray_concurrency} if args.engine == "ray" else {}
    )
    engine = engines.get(args.engine, **options)
    network = engine.network(network_spec(args))
    namespace = FeatureCache(args.cache).namespace(network.fingerprint)
    for older in FeatureCache(args.cache).older_formats(network.fingerprint):
        print(
            f"featx: note: {older} holds this network's vectors in an older cache format, which is not "
            f"read: they are computed again (remove it: featx cache prune {args.cache} --namespace {older})",
            file=sys.stderr,
        )
    inputs = f"{len(manifest.names)} shards" if isinstance(manifest, Shards) else f"{len(manifest)} images"
    print(
        f"{inputs} -> {network.backbone.name} [{network.weights_description}] "
        f"node {network.node} ({network.n_features} features, {network.pooling}), "
        f"{network.device} {network.precision}, decoding {network.preprocessing.decoding}; "
        f"cache {namespace.path}",
        file=sys.stderr,
    )
    summary = run_extract_job(
        manifest,
        network,
        namespace,
        run_options(args, progress=progress_wanted(args)),
        on_error=args.on_error,
        out=args.out,
        engine=engine,
    )
    errors_path = args.errors
    if errors_path is None and (summary.errors or summary.skipped):  # never lose the list of failures
        errors_path = Path(args.out).with_suffix(".errors.csv") if args.out else Path("featx-errors.csv")
    print(summary)
    if errors_path:
        errors_path = _write_errors_somewhere(errors_path, summary, chosen=args.errors is not None)
        print(
            f"errors: {errors_path} ({len(summary.errors)} failed, {len(summary.skipped)} skipped entries listed)"
        )
    for error in summary.errors[:5]:
        print(f"  failed {one_line(error.source)}: {error.kind}: {one_line(error.reason)}", file=sys.stderr)
    unreachable = [error for error in summary.errors if error.kind == "unreachable"]
    if unreachable:  # not a bad file: the job is unfinished, and a scheduler should know
        print(
            f"featx: error: {len(unreachable)} inputs could not be reached (first: "
            f"{one_line(unreachable[0].source)}: {one_line(unreachable[0].reason)}); what was extracted is "
            f"cached and they are listed in {errors_path}: run the same command again to read them",
            file=sys.stderr,
        )
        return 1
    if summary.errors and summary.n_cached + summary.n_computed == 0:
        print(
            f"featx: error: every input failed ({len(summary.errors)}); nothing was extracted, see {errors_path}",
            file=sys.stderr,
        )
        return 1
    return 0


def _seconds(text: str) -> float:
    """``--read-timeout``: a finite number of seconds (``inf`` would make every remote input fail)."""
    from featx.inputs.timeouts import parse_seconds

    try:
        return parse_seconds(text, repr(text))
    except ParameterError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _refuse_outputs_that_overwrite(args: argparse.Namespace) -> None:
    """Before any work: no output may be an input or another output (``--out x.npy`` also writes
    ``x.meta.csv``, and its errors go beside it as ``x.errors.csv`` unless ``--errors`` says otherwise)."""
    claimed = {_same(args.source): "the input SOURCE"}
    if args.calibration:
        claimed[_same(args.calibration)] = "the --calibration input"
    outputs = []
    if args.out:
        out = Path(args.out)
        outputs.append(("--out", out))
        if out.suffix == ".npy":
            outputs.append(("--out's metadata", out.with_suffix(".meta.csv")))
    if args.errors:
        outputs.append(("--errors", Path(args.errors)))
    for flag, path in outputs:
        owner = claimed.get(_same(path))
        if owner is not None:
            raise ParameterError(
                f"{flag} {path} is also {owner}: it would be overwritten; write the output to another file"
            )
        claimed[_same(path)] = flag


def _same(path: str | Path) -> str:
    """One spelling per file: real paths for local files, the text itself for URLs."""
    text = str(path)
    return text if "://" in text else os.path.realpath(text)


def _write_errors_somewhere(path: Path | str, summary: JobSummary, chosen: bool) -> Path:
    """The errors file where it was asked for or belongs; if that default place cannot be written (a
    read-only working folder), a temporary folder, so that the list of failures is never lost."""
    from featx.job import write_errors

    try:
        return write_errors(path, summary.errors, summary.skipped)
    except OutputError as error:
        if chosen:
            raise
        fallback = Path(tempfile.mkdtemp(prefix="featx-errors-")) / Path(path).name
        print(f"featx: {one_line(error)}; writing the errors to {fallback} instead", file=sys.stderr)
        return write_errors(fallback, summary.errors, summary.skipped)
