"""How many BLAS threads the folds' fits run on, chosen by timing the first fold both ways.

On some machines OpenBLAS's threads make scikit-learn's L-BFGS fits several times slower (logistic
regression 5x slower with two threads than with one on a 2-core Intel Xeon, more beside a busy
neighbour); on others the same threads speed the same fit up. That is a property of the machine and its
load, so featx measures instead of ruling, as it does for precision. A matrix product cannot stand in for
the trial (on that Xeon it was 1.5x faster on two threads while the fit was 5x slower), so the trial is
a real fit: the first fold's, once with the default threads and once with one. The faster, by a clear
margin, runs the remaining folds, and its own first-fold result is kept, so the trial costs one fit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

MARGIN = 1.25  # one thread must be this much faster to replace the default: near a tie the default stays

Result = dict[str, np.ndarray]  # scikit-learn's cross_validate result


def blas_threads() -> int:
    """The most threads any BLAS library loaded in this process runs (0 when none is loaded)."""
    return max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=0)


def run_folds(
    run: Callable[[Sequence[Any]], Result], folds: Sequence[Any], n_jobs: int | None, mode: str = "auto"
) -> tuple[Result, str | None]:
    """``run(folds)`` (cross-validation on those folds) with the BLAS threads ``mode`` asks for: "auto"
    times the first fold's fit and prediction with the default threads and with one, "keep" leaves the
    threads as they are. Returns the result and, when a trial ran, one line saying what it chose and why.

    No trial where it cannot pay: "keep", a single fold, BLAS already on one thread, or folds run by
    ``n_jobs`` workers (joblib gives each worker its share of the cores already)."""
    threads = blas_threads()
    if mode == "keep" or len(folds) < 2 or threads <= 1 or n_jobs not in (None, 1):
        return run(folds), None
    default = run(folds[:1])
    with threadpool_limits(1, user_api="blas"):
        single = run(folds[:1])
    seconds_default, seconds_single = (r["fit_time"][0] + r["score_time"][0] for r in (default, single))
    if seconds_default > MARGIN * seconds_single:
        limit, first, chosen = 1, single, "one BLAS thread"
    else:
        limit, first, chosen = None, default, f"{threads} BLAS threads (the default)"
    with threadpool_limits(limit, user_api="blas"):
        rest = run(folds[1:])
    why = (
        f"{chosen}: the first fold took {seconds_single:.3f} s on one thread, "
        f"{seconds_default:.3f} s on {threads}"
    )
    return {key: np.concatenate([first[key], rest[key]]) for key in first}, why
