"""``featx compare``: classifiers, the transfer report, plots and the HTML page, from features or images."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from featx.cli._common import one_line, progress_wanted
from featx.errors import ParameterError
from featx.options import BLAS_THREADS, N_JOBS, NON_NEGATIVE_INT, POSITIVE_INT


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    compare = commands.add_parser(
        "compare", help="cross-validate classifiers on features; --report: did transfer help at all?"
    )
    compare.add_argument(
        "source", help="a features file from `featx extract --out`, or a folder / manifest of images"
    )
    compare.add_argument(
        "--cache", default=".featx-cache", help="feature cache directory (default: .featx-cache)"
    )
    compare.add_argument("--classifiers", default="logreg,linsvm,svm,knn,rf", help="comma-separated names")
    compare.add_argument(
        "--cv",
        type=_folds,
        default=5,
        help="number of stratified folds (2 or more), or 'split' for the manifest's split",
    )
    compare.add_argument(
        "--tune", action="store_true", help="grid-search each classifier's regularisation (nested)"
    )
    compare.add_argument(
        "--out", help="write the comparison table to FILE.csv (the report to FILE.transfer.csv)"
    )
    compare.add_argument(
        "--html", help="write one self-contained page (tables, verdict, figures, setup) to FILE.html"
    )
    compare.add_argument(
        "--plot", help="write accuracies, the best one's confusion matrix (and the report) to FILE.png"
    )
    compare.add_argument(
        "--report",
        action="store_true",
        help="transfer report: pretrained features vs raw pixels and random weights, same folds",
    )
    compare.add_argument(
        "--layers",
        default=None,
        help="report: 'stages' for early/middle/last layers, or comma-separated nodes",
    )
    compare.add_argument(
        "--finetune",
        action="store_true",
        help="add fine-tuned rows: a new head on the frozen base, then the last blocks unfrozen",
    )
    compare.add_argument(
        "--unfreeze",
        type=NON_NEGATIVE_INT.parse,
        default=2,
        help="--finetune: blocks to unfreeze (default 2)",
    )
    compare.add_argument(
        "--finetune-folds",
        type=POSITIVE_INT.parse,
        default=1,
        help="--finetune: folds to train on (default 1: minutes per fold on a CPU)",
    )
    compare.add_argument("--n-jobs", type=N_JOBS.parse, help="folds fitted in parallel (default 1)")
    compare.add_argument(
        "--blas-threads",
        choices=BLAS_THREADS,
        default="auto",
        help="auto: time each classifier's first fold with BLAS's default threads and with one, run the "
        "rest on the faster; keep: leave BLAS as it is (default: auto)",
    )
    compare.add_argument("--quiet", action="store_true", help="no progress bar")
    compare.set_defaults(run=run)
    return compare


def run(args: argparse.Namespace) -> int:
    from featx.evaluate import (
        compare_classifiers,
        compare_finetuning,
        confusion,
        recommendation,
        transfer_report,
        with_finetuning,
    )

    cv = args.cv
    _check_outputs(args)  # before minutes of fitting, not after
    X, meta, backbone, layer = _labelled_features(args)
    split = meta["split"].to_numpy() if "split" in meta else None
    y = meta["label"].astype(str).to_numpy()
    print(
        f"{len(y)} labelled images, {X.shape[1]} features ({backbone} {layer}), "
        f"{'the manifest split' if cv == 'split' else f'{cv}-fold cross-validation'}",
        file=sys.stderr,
    )
    table = compare_classifiers(
        X,
        y,
        classifiers=args.classifiers,
        cv=cv,
        split=split,
        tune=args.tune,
        backbone=backbone,
        layer=layer,
        n_jobs=args.n_jobs,
        blas_threads=args.blas_threads,
        progress=not args.quiet,
    )
    if args.finetune:
        finetuned = compare_finetuning(
            meta["path"].tolist(),
            y,
            backbone=(args.backbone or [backbone])[0],
            weights=args.weights,
            device=args.device,
            unfreeze=(0, args.unfreeze),
            cv=cv,
            split=split,
            max_folds=args.finetune_folds,
        )
        table = pd.concat([table, finetuned]).sort_values("accuracy_mean", ascending=False, ignore_index=True)
    print(table.to_string(index=False, float_format="{:.4f}".format))
    for note in table.attrs.get("notes", []):
        print(f"stand-in: {note}")
    for line in table.attrs.get("blas", []):
        print(f"blas: {line}")
    print(recommendation(table))
    best = table.loc[table["layer"] != "trained", "classifier"].iloc[0]  # the best on the features themselves
    report = None
    if args.report:
        from featx.cli._network import network_spec, run_options

        layers = args.layers if args.layers in (None, "stages") else args.layers.split(",")
        network = dataclasses.asdict(network_spec(args, backbone=backbone))
        running = dataclasses.asdict(run_options(args, progress=progress_wanted(args)))
        report = transfer_report(
            meta["path"].tolist(),
            y,
            backbones=args.backbone or [backbone],
            layers=layers or ([args.layer] if args.layer else None),
            classifier=best,
            cv=cv,
            split=split,
            dataset=_dataset_name(args.source),
            n_jobs=args.n_jobs,
            blas_threads=args.blas_threads,
            cache_dir=args.cache,
            **{k: v for k, v in network.items() if k not in ("backbone", "layer")},
            **{k: v for k, v in running.items() if k != "fail_fast"},
        )
        for line in report.summary.attrs["blas"]:
            print(f"blas: {line}")
        if args.finetune:
            report = with_finetuning(report, table[table["layer"] == "trained"])
        print(f"\n{report}")
    if args.out:
        _write_csv(table, Path(args.out))
        print(f"table: {args.out}")
        if report is not None:
            transfer_csv = Path(args.out).with_suffix(".transfer.csv")
            _write_csv(report.summary, transfer_csv)
            print(f"transfer report: {transfer_csv}")
    if args.plot or args.html:
        from featx.evaluate.figures import comparison_figure, save_png

        figure = comparison_figure(table, confusion(X, y, best, cv=cv, split=split), report)
        if args.plot:
            print(f"plot: {save_png(figure, args.plot)}")
        if args.html:
            from featx.evaluate.html import html_report, setup_of, write_html

            setup = setup_of(
                meta.attrs.get("featx", {}),
                n_images=len(y),
                n_classes=len(set(y)),
                folds="the manifest split" if cv == "split" else f"{cv}-fold stratified",
            )
            page = html_report(
                table, setup, report=report, figure=figure, title=f"featx: {_dataset_name(args.source)}"
            )
            print(f"html: {write_html(args.html, page)}")
    return 0


def _folds(text: str) -> int | str:
    """An argparse ``type=`` for ``--cv``: 'split', or a number of folds of 2 or more."""
    if text == "split":
        return text
    if not text.isdigit() or int(text) < 2:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of folds >= 2 nor 'split'")
    return int(text)


def _check_outputs(args: argparse.Namespace) -> None:
    """Each output's suffix and folder, before any work: a comparison can take minutes."""
    from featx.feature_files import check_output_path

    for path, suffixes, flag in (
        (args.out, (".csv",), "--out"),
        (args.html, (".html", ".htm"), "--html"),
        (args.plot, (".png",), "--plot"),
    ):
        if path:
            check_output_path(path, suffixes, flag)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """A table, whole or not at all."""
    from featx._files import atomic_write

    atomic_write(path, lambda handle: frame.to_csv(handle, index=False), f"the table {path}")


def _dataset_name(source: str) -> str:
    """'data/digits/manifest.csv' -> 'digits'; 'out/fashion.parquet' -> 'fashion'; a folder -> its name."""
    path = Path(source)
    return path.parent.resolve().name if path.stem == "manifest" else path.stem


def _labelled(args: argparse.Namespace, meta: pd.DataFrame) -> np.ndarray:
    """Which rows hold a label, if any do; labels no fold can learn from are refused by ``make_folds``,
    the check every comparison shares, here naming the source."""
    from featx.evaluate import make_folds

    if "label" not in meta:
        raise ParameterError(
            f"{args.source} has no labels: compare needs class sub-folders or a 'label' column"
        )
    labelled = meta["label"].notna().to_numpy()
    if not labelled.any():
        raise ParameterError(f"{args.source}: every label is blank; compare needs two classes or more")
    split = meta.loc[labelled, "split"].to_numpy() if "split" in meta else None
    try:
        make_folds(meta.loc[labelled, "label"].astype(str).to_numpy(), args.cv, split=split)
    except ParameterError as error:
        raise ParameterError(f"{args.source}: {error}") from None
    return labelled


def _labelled_features(args: argparse.Namespace) -> tuple[np.ndarray, pd.DataFrame, str, str]:
    """(X, meta, backbone, layer) from a features file, or extracted through the cache from images."""
    from featx.cache import open_store
    from featx.cli._network import network_spec, run_options
    from featx.extract import extract
    from featx.feature_files import load_features
    from featx.inputs.manifests import is_features_file, load_manifest
    from featx.models.build import build_network

    if is_features_file(args.source):
        X, meta = load_features(args.source)
        fingerprint = meta.attrs.get("featx", {})
        backbone = fingerprint.get("backbone", "?")
        layer = fingerprint.get("node", "?")
    else:
        meta = load_manifest(args.source)
        _labelled(args, meta)  # before minutes of extraction
        network = build_network(network_spec(args, backbone=(args.backbone or ["resnet50"])[0]))
        backbone = network.backbone.name
        result = extract(
            meta["path"].tolist(),
            network,
            open_store(network.fingerprint, args.cache),
            run_options(args, progress=progress_wanted(args)),
        )
        for error in result.errors[:5]:
            print(
                f"  skipped {one_line(error.source)}: {error.kind}: {one_line(error.reason)}", file=sys.stderr
            )
        failed = [error.index for error in result.errors]
        if result.errors and len(failed) == len(meta):
            first = result.errors[0]
            raise ParameterError(
                f"{args.source}: every image failed ({len(failed)}); the first, {one_line(first.source)}: "
                f"{first.kind}: {one_line(first.reason)}"
            )
        X = np.delete(result.features, failed, axis=0)
        meta = meta.drop(index=failed).reset_index(drop=True)
        layer = network.node
        meta.attrs["featx"] = network.fingerprint
    labelled = _labelled(args, meta)
    broken = np.flatnonzero(~np.isfinite(X).all(axis=1) & labelled)
    if broken.size:
        first = meta["path"][broken[0]] if "path" in meta else f"row {broken[0]}"
        raise ParameterError(
            f"{args.source}: {broken.size} feature row(s) are not finite (first: {first}); extract them "
            "again or drop those rows"
        )
    return X[labelled], meta[labelled].reset_index(drop=True), backbone, layer
