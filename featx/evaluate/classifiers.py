"""The classifiers ``featx compare`` tries on features, each a Pipeline with the scaling it needs.

Defaults suit CNN features (hundreds to thousands of dense, non-negative dimensions): standardise for the
linear models and the RBF SVM, L2-normalise for k-NN (Euclidean on unit vectors ranks like cosine), nothing
for the forest. ``tune=True`` wraps each in a small ``GridSearchCV`` over its regularisation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC

from featx.errors import ParameterError
from featx.estimators.probe import LinearProbe


def _logreg(random_state: int) -> Pipeline:
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=random_state)
    )


def _linsvm(random_state: int) -> Pipeline:
    # liblinear's dual coordinate descent: with C this small it converges in a few passes, where the primal
    # solver that dual="auto" picks for more rows than features took 2x longer to the same model
    # (Fashion-MNIST features, 2,400 x 1,280: 2.5 s against 5.1 s a fold, same accuracy; docs/benchmarks.md)
    return make_pipeline(
        StandardScaler(), LinearSVC(C=0.01, dual=True, max_iter=5000, random_state=random_state)
    )


def _svm(random_state: int) -> Pipeline:
    return make_pipeline(StandardScaler(), SVC(C=10, gamma="scale", random_state=random_state))


class _KNeighbors(KNeighborsClassifier):
    """A k-nearest-neighbours vote over at most the rows it was fitted on: a fold of a small data set
    (4 images, ``cv=2``) has fewer training rows than ``n_neighbors``, where scikit-learn's raises."""

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):  # noqa: N803 (scikit-learn's name)
        n_neighbors = n_neighbors or min(self.n_neighbors, self.n_samples_fit_ - (X is None))
        return super().kneighbors(X, n_neighbors, return_distance)


def _knn(random_state: int) -> Pipeline:
    knn = _KNeighbors(n_neighbors=10, weights="distance")  # the step keeps scikit-learn's name (PARAM_GRIDS)
    return Pipeline([("normalizer", Normalizer()), ("kneighborsclassifier", knn)])


def _rf(random_state: int) -> Pipeline:
    return make_pipeline(RandomForestClassifier(n_estimators=300, random_state=random_state))


CLASSIFIERS: dict[str, Callable[[int], Pipeline]] = {
    "logreg": _logreg,
    "linsvm": _linsvm,
    "svm": _svm,
    "knn": _knn,
    "rf": _rf,
}

PARAM_GRIDS: dict[str, dict[str, list[Any]]] = {
    "logreg": {"logisticregression__C": [0.01, 0.1, 1.0]},
    "linsvm": {"linearsvc__C": [0.001, 0.01, 0.1]},
    "svm": {"svc__C": [1, 10, 100]},
    "knn": {"kneighborsclassifier__n_neighbors": [5, 10, 20]},
    "rf": {"randomforestclassifier__max_features": ["sqrt", 0.1]},
}


def _probe(random_state: int) -> BaseEstimator:
    return LinearProbe(C=0.1, random_state=random_state)


def _nystroem_linsvm(random_state: int) -> Pipeline:
    # an RBF kernel approximated by 1,000 landmark features, then a linear SVM: linear in n, not quadratic.
    # C is the SVC's own (10): on Fashion-MNIST features it came within 0.1-0.4 points of the SVC, where
    # C=0.1 stayed 3 points below (README, "At full size").
    return make_pipeline(
        StandardScaler(),
        Nystroem(gamma=None, n_components=1000, random_state=random_state),
        LinearSVC(C=10, max_iter=5000, random_state=random_state),
    )


@dataclass(frozen=True)
class StandIn:
    """A scalable estimator with the same intent, used above ``max_rows`` training rows."""

    max_rows: int
    name: str
    build: Callable[[int], BaseEstimator]
    why: str


#: Where the classical estimator stops finishing in reasonable time on a 2-core CPU (measured with
#: ``benchmarks/probe.py``; see the README), and what replaces it there.
STAND_INS: dict[str, StandIn] = {
    "logreg": StandIn(20_000, "probe", _probe, "L-BFGS logistic regression in float64 takes minutes per fit"),
    "svm": StandIn(15_000, "nystroem+linsvm", _nystroem_linsvm, "an RBF SVC's fit grows with n^2"),
}


def plan_classifiers(
    classifiers: Iterable[str] | Mapping[str, BaseEstimator] | None,
    n_train: int,
    *,
    tune: bool = False,
    random_state: int = 0,
) -> dict[str, tuple[str, BaseEstimator, str]]:
    """name -> (what actually runs, the estimator, why a stand-in was chosen or ""), for ``n_train`` rows."""
    planned = {}
    for name, estimator in resolve_classifiers(classifiers, tune=tune, random_state=random_state).items():
        stand_in = STAND_INS.get(name) if not isinstance(classifiers, Mapping) else None
        if stand_in is not None and n_train > stand_in.max_rows:
            why = (
                f"{name}: {n_train:,} training rows > {stand_in.max_rows:,} ({stand_in.why}); "
                f"ran {stand_in.name} instead"
            )
            planned[name] = (stand_in.name, stand_in.build(random_state), why)
        else:
            planned[name] = (name, estimator, "")
    return planned


def make_classifier(name: str, *, tune: bool = False, random_state: int = 0) -> BaseEstimator:
    """A fresh, unfitted classifier by name (see ``CLASSIFIERS``); tuned by an inner 3-fold grid search."""
    if name not in CLASSIFIERS:
        raise ParameterError(
            f"classifier {name!r} is not known; use one of {sorted(CLASSIFIERS)} "
            "or pass a dict of name -> estimator"
        )
    pipeline = CLASSIFIERS[name](random_state)
    if not tune:
        return pipeline
    inner = StratifiedKFold(n_splits=3, shuffle=True, random_state=random_state)
    return GridSearchCV(pipeline, PARAM_GRIDS[name], cv=inner, scoring="accuracy")


def as_classifier(
    classifier: str | BaseEstimator, *, random_state: int = 0, n_train: int = 0
) -> BaseEstimator:
    """An estimator as given, or a fresh one by name (see ``CLASSIFIERS``; its stand-in above its size)."""
    if isinstance(classifier, BaseEstimator):
        return classifier
    return plan_classifiers([classifier], n_train, random_state=random_state)[classifier][1]


def resolve_classifiers(
    classifiers: Iterable[str] | Mapping[str, BaseEstimator] | None,
    *,
    tune: bool = False,
    random_state: int = 0,
) -> dict[str, BaseEstimator]:
    """Names (or a name -> estimator mapping, used as given) -> unfitted estimators, in order."""
    if classifiers is None:
        classifiers = list(CLASSIFIERS)
    if isinstance(classifiers, str):
        classifiers = [name.strip() for name in classifiers.split(",") if name.strip()]
    if isinstance(classifiers, Mapping):
        return {name: clone(estimator) for name, estimator in classifiers.items()}
    resolved = {name: make_classifier(name, tune=tune, random_state=random_state) for name in classifiers}
    if not resolved:
        raise ParameterError("no classifiers to compare")
    return resolved
