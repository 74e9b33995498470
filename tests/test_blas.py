"""BLAS threads for the folds' fits, chosen by timing the first fold both ways (featx.evaluate.blas).

The trial's timings are given here (the stand-in for cross-validation reports the seconds its thread
count earns), so each test knows which way the choice must go; the threads are real BLAS limits."""

import re

import numpy as np
import pytest
from sklearn.datasets import make_classification
from test_cache import featx_cli
from test_hostile_cli import one_line_error
from threadpoolctl import threadpool_limits

from featx import ParameterError
from featx.evaluate import compare_classifiers, transfer_report
from featx.evaluate.blas import MARGIN, blas_threads, run_folds

FOLDS = ["fold 0", "fold 1", "fold 2"]


def timed_by_threads(seconds):
    """A stand-in for cross-validation: each fold 'takes' ``seconds(threads)`` for the BLAS threads in force
    when it runs, and scores the thread count, so a result says which setting computed it."""
    calls = []

    def run(folds):
        threads = blas_threads()
        calls.append((list(folds), threads))
        n = len(folds)
        return {
            "fit_time": np.full(n, seconds(threads)),
            "score_time": np.zeros(n),
            "test_accuracy": np.full(n, float(threads)),
        }

    return run, calls


@pytest.fixture
def two_threads():
    with threadpool_limits(2, user_api="blas"):
        if blas_threads() != 2:
            pytest.skip("this BLAS cannot run two threads")
        yield


def test_one_thread_clearly_faster_runs_the_other_folds_on_one_and_its_first_fold_is_kept(two_threads):
    run, calls = timed_by_threads(lambda threads: 5.0 if threads > 1 else 1.0)
    result, why = run_folds(run, FOLDS, n_jobs=None)
    assert calls == [(["fold 0"], 2), (["fold 0"], 1), (["fold 1", "fold 2"], 1)]
    assert result["test_accuracy"].tolist() == [1.0, 1.0, 1.0]  # every fold computed on one thread
    assert why == "one BLAS thread: the first fold took 1.000 s on one thread, 5.000 s on 2"
    assert blas_threads() == 2  # the limit ended with the folds


@pytest.mark.parametrize("slower_by", [0.5, MARGIN * 0.9], ids=["threads-help", "near-a-tie"])
def test_threads_that_help_or_nearly_tie_keep_the_default_for_every_fold(two_threads, slower_by):
    run, calls = timed_by_threads(lambda threads: slower_by if threads > 1 else 1.0)
    result, why = run_folds(run, FOLDS, n_jobs=None)
    assert calls[-1] == (["fold 1", "fold 2"], 2)
    assert result["test_accuracy"].tolist() == [2.0, 2.0, 2.0]
    assert why.startswith("2 BLAS threads (the default): the first fold took 1.000 s on one thread")


@pytest.mark.parametrize(
    "folds, n_jobs, mode",
    [(FOLDS, None, "keep"), (FOLDS, 2, "auto"), (FOLDS[:1], None, "auto")],
    ids=["keep", "parallel-folds", "one-fold"],
)
def test_no_trial_where_it_is_not_wanted_or_cannot_pay(two_threads, folds, n_jobs, mode):
    run, calls = timed_by_threads(lambda threads: 5.0 if threads > 1 else 1.0)
    result, why = run_folds(run, folds, n_jobs, mode)
    assert calls == [(folds, 2)] and why is None and len(result["test_accuracy"]) == len(folds)


def test_no_trial_when_blas_already_runs_one_thread():
    with threadpool_limits(1, user_api="blas"):
        run, calls = timed_by_threads(lambda threads: 1.0)
        _, why = run_folds(run, FOLDS, None)
    assert len(calls) == 1 and why is None


def test_a_comparison_says_what_each_trial_chose_and_keep_runs_none(two_threads):
    X, y = make_classification(300, 40, n_informative=10, n_classes=3, random_state=0)
    table = compare_classifiers(X, y, classifiers=["logreg", "knn"], cv=3)
    line = r"(one BLAS thread|2 BLAS threads \(the default\)): the first fold took \d+\.\d{3} s on one thread, \d+\.\d{3} s on 2"
    assert {entry.split(": ", 1)[0] for entry in table.attrs["blas"]} == {"logreg", "knn"}
    assert all(re.fullmatch(rf"\w+: {line}", entry) for entry in table.attrs["blas"])
    assert (table["n_folds"] == 3).all()
    kept = compare_classifiers(X, y, classifiers=["logreg", "knn"], cv=3, blas_threads="keep")
    assert kept.attrs["blas"] == []
    with pytest.raises(ParameterError, match="'blas_threads' .* one of \\{'auto', 'keep'\\}"):
        compare_classifiers(X, y, classifiers=["knn"], cv=3, blas_threads="one")


def test_transfer_report_refuses_a_bad_value_before_extracting_anything(tmp_path):
    with pytest.raises(ParameterError, match="'blas_threads' parameter of transfer_report"):
        transfer_report(["no-such-image.png"], ["a"], cache_dir=tmp_path / "cache", blas_threads=1)
    assert not (tmp_path / "cache").exists()


def test_the_command_line_refuses_a_thread_count_naming_the_choices(image_folder):
    one_line_error(featx_cli("compare", image_folder, "--blas-threads", "2"), "--blas-threads", "'2'", "auto")
