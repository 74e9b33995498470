"""LinearProbe: scikit-learn's logistic regression, fitted by torch L-BFGS (issue: experiments at full size)."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx import LinearProbe


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X.astype(np.float32), y, test_size=0.3, random_state=0, stratify=y)


@parametrize_with_checks([LinearProbe(max_iter=200)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("C", [0.01, 0.1, 1.0])
def test_it_agrees_with_logistic_regression_at_the_same_C(digits, C):
    X_train, X_test, y_train, y_test = digits
    # both converged tightly: the same objective must give the same model
    probe = LinearProbe(C=C, tol=1e-7, max_iter=2000).fit(X_train, y_train)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, tol=1e-8)).fit(
        X_train, y_train
    )
    assert (probe.predict(X_test) == reference.predict(X_test)).mean() >= 0.99
    assert abs(probe.score(X_test, y_test) - reference.score(X_test, y_test)) <= 0.005
    np.testing.assert_allclose(probe.predict_proba(X_test), reference.predict_proba(X_test), atol=0.02)


def test_at_the_default_tolerance_predictions_still_agree(digits):
    X_train, X_test, y_train, _ = digits
    probe = LinearProbe(C=0.1).fit(X_train, y_train)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.1)).fit(X_train, y_train)
    assert (probe.predict(X_test) == reference.predict(X_test)).mean() >= 0.99


def test_a_regularisation_path_picks_C_on_a_validation_split_and_refits(digits):
    X_train, X_test, y_train, y_test = digits
    probe = LinearProbe(Cs=[1e-4, 1e-2, 1.0]).fit(X_train, y_train)
    assert [step["C"] for step in probe.path_] == [1e-4, 1e-2, 1.0]
    accuracies = [step["val_accuracy"] for step in probe.path_]
    assert probe.path_[int(np.argmax(accuracies))]["C"] == probe.C_ and accuracies[0] < max(accuracies)
    assert probe.score(X_test, y_test) > 0.9


def test_it_reads_a_float32_memory_map_without_a_float64_copy(digits, tmp_path):
    X_train, _, y_train, _ = digits
    np.save(tmp_path / "X.npy", X_train)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    probe = LinearProbe(C=0.1).fit(mapped, y_train)
    np.testing.assert_array_equal(
        probe.predict(mapped), LinearProbe(C=0.1).fit(X_train, y_train).predict(X_train)
    )


def test_it_works_in_a_pipeline_grid_search_clone_and_pickle(digits):
    X_train, X_test, y_train, y_test = digits
    search = GridSearchCV(LinearProbe(), {"C": [0.01, 1.0]}, cv=3).fit(X_train, y_train)
    assert search.best_params_["C"] in (0.01, 1.0) and search.score(X_test, y_test) > 0.9
    restored = pickle.loads(pickle.dumps(search.best_estimator_))
    np.testing.assert_array_equal(restored.predict(X_test), search.predict(X_test))
    assert clone(LinearProbe(C=3.0)).get_params()["C"] == 3.0


def test_binary_decision_function_is_one_column_like_scikit_learns(digits):
    X_train, X_test, y_train, _ = digits
    keep = np.isin(y_train, [3, 8])
    probe = LinearProbe().fit(X_train[keep], y_train[keep])
    scores = probe.decision_function(X_test)
    assert scores.shape == (len(X_test),)
    np.testing.assert_array_equal(probe.predict(X_test), np.where(scores > 0, 8, 3))


def test_above_their_size_classifiers_are_replaced_by_named_stand_ins(digits, monkeypatch):
    from featx.evaluate import compare_classifiers
    from featx.evaluate.classifiers import STAND_INS, StandIn

    X_train, _, y_train, _ = digits
    small = {name: StandIn(500, s.name, s.build, s.why) for name, s in STAND_INS.items()}
    monkeypatch.setattr("featx.evaluate.classifiers.STAND_INS", small)
    below = compare_classifiers(X_train[:600], y_train[:600], classifiers="logreg,svm,knn", cv=3)
    assert set(below["estimator"]) == {"logreg", "svm", "knn"} and below.attrs["notes"] == []
    above = compare_classifiers(X_train[:900], y_train[:900], classifiers="logreg,svm,knn", cv=3)
    assert dict(zip(above["classifier"], above["estimator"])) == {
        "logreg": "probe",
        "svm": "nystroem+linsvm",
        "knn": "knn",
    }
    assert len(above.attrs["notes"]) == 2 and all(
        "600 training rows > 500" in n for n in above.attrs["notes"]
    )
    assert above["accuracy_mean"].min() > 0.85  # the stand-ins still classify well
