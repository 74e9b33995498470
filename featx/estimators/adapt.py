"""Domain adaptation on features: ``CORAL`` (Sun, Feng & Saenko, 2016) and a source-vs-adapted report.

When new images look different from the training images (another camera, lighting, rendering), their
features shift. CORAL re-colours the source features so their mean and covariance match the target's:
unsupervised (target labels are never used), a closed form, no retraining of the network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from featx.errors import ParameterError
from featx.options import NON_NEGATIVE, validate


def _matrix_power(covariance: np.ndarray, power: float) -> np.ndarray:
    """A symmetric positive-definite matrix to a real power, through its eigendecomposition."""
    values, vectors = np.linalg.eigh(covariance)
    return (vectors * np.clip(values, np.finfo(float).tiny, None) ** power) @ vectors.T


class CORAL(TransformerMixin, BaseEstimator):
    """Correlation alignment: source features whitened, then coloured with the target's covariance.

    ``CORAL().fit(X_source, target=X_target).transform(X)`` maps X (source-domain features) to
    ``(X - mean_source) @ Cs^-1/2 @ Ct^1/2 + mean_target``, where ``Cs`` and ``Ct`` are the covariances
    plus ``regularization`` times the identity. Train a classifier on the transformed source features and
    apply it to untouched target features. In a Pipeline: ``pipe.fit(X, y, coral__target=X_target)``.

    Parameters
    ----------
    regularization : float, default=1.0
        Added to both covariances' diagonals (the paper's choice, 1, suits standardised CNN features).
    align_mean : bool, default=True
        Also move the mean to the target's (the original method aligns covariance only).
    """

    _parameter_constraints = {"regularization": NON_NEGATIVE}

    def __init__(self, regularization: float = 1.0, *, align_mean: bool = True):
        self.regularization = regularization
        self.align_mean = align_mean

    def fit(self, X: Any, y: Any = None, target: Any = None) -> CORAL:
        """Learn the map from the source features X to the statistics of ``target`` (unlabelled)."""
        validate(type(self).__name__, self.get_params(deep=False), self._parameter_constraints)
        X = validate_data(self, X, dtype=np.float64, reset=True)
        if target is None:
            raise ParameterError("CORAL needs target-domain features: fit(X_source, target=X_target)")
        target = check_array(target, dtype=np.float64)
        if target.shape[1] != X.shape[1]:
            raise ParameterError(f"target has {target.shape[1]} features, X has {X.shape[1]}")
        identity = self.regularization * np.eye(X.shape[1])
        source_cov = np.atleast_2d(np.cov(X, rowvar=False)) + identity
        target_cov = np.atleast_2d(np.cov(target, rowvar=False)) + identity
        self.transform_matrix_ = _matrix_power(source_cov, -0.5) @ _matrix_power(target_cov, 0.5)
        self.source_mean_ = X.mean(axis=0)
        self.target_mean_ = target.mean(axis=0) if self.align_mean else self.source_mean_
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "transform_matrix_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return (X - self.source_mean_) @ self.transform_matrix_ + self.target_mean_

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "transform_matrix_")
        return np.asarray([f"coral{i}" for i in range(self.n_features_in_)], dtype=object)


def shift_report(
    X_source: np.ndarray,
    y_source: Any,
    X_target: np.ndarray,
    X_test: np.ndarray,
    y_test: Any,
    classifier: BaseEstimator,
    *,
    coral: CORAL | None = None,
) -> pd.DataFrame:
    """Target-domain test accuracy of a classifier trained on labelled source features, without and with
    CORAL fitted to the unlabelled target features ``X_target``.

    Only ``y_test`` carries target labels, and it is used only to score. Whether adaptation helps is
    measured, not assumed.
    """
    adapter = (clone(coral) if coral is not None else CORAL()).fit(X_source, target=X_target)
    source_only = clone(classifier).fit(X_source, y_source)
    adapted = clone(classifier).fit(adapter.transform(X_source), y_source)
    return pd.DataFrame(
        [
            {"training": "source only", "target_accuracy": source_only.score(X_test, y_test)},
            {"training": "CORAL", "target_accuracy": adapted.score(X_test, y_test)},
        ]
    )
