"""``LinearProbe``: multinomial logistic regression for 10^4-10^6 cached feature vectors, fitted full-batch
with torch's L-BFGS on the CPU or GPU (the linear-evaluation protocol of CLIP, SimCLR and BYOL).

scikit-learn's ``LogisticRegression(solver="lbfgs")`` runs in float64 on one core path; on 40k x 2048 a fit
takes minutes and a C sweep multiplies that. Here the features stay float32, the loss and gradient are two
matrix products per step, and a C path is fitted with warm starts (each C starts from the previous
solution), so a sweep costs little more than one fit. See ``benchmarks/probe.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from featx.errors import ParameterError
from featx.models.devices import resolve_device


class LinearProbe(ClassifierMixin, BaseEstimator):
    """L2-regularised multinomial logistic regression on standardised features, fitted with torch L-BFGS.

    It minimises ``C * sum_i cross_entropy_i + ||W||^2 / 2`` over the standardised features (the intercept
    is not penalised), which is what ``make_pipeline(StandardScaler(), LogisticRegression(C=C))`` minimises
    for three or more classes: the same ``C`` means the same model. Two classes use the same softmax form,
    whose optimum equals scikit-learn's binary model at ``2 * C``.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength, as in ``LogisticRegression``.
    Cs : sequence of float or None, default=None
        A regularisation path: fit each C in increasing order on a stratified split (warm-starting from the
        previous C), keep the one with the best validation accuracy (``C_``), then refit on all the data.
        None fits ``C`` alone.
    validation_fraction : float, default=0.2
        The share of the rows held out to choose C on the path.
    max_iter : int, default=500
        L-BFGS iterations per fit.
    tol : float, default=1e-4
        Stop when the largest gradient entry of the mean loss is below ``tol`` (torch's ``tolerance_grad``;
        scikit-learn's lbfgs stops on the same quantity at the same default).
    device : str, default="auto"
        Where to fit: "auto" (cuda, then mps, then cpu) or any torch device.
    random_state : int, default=0
        Seeds the validation split of the path.

    Attributes
    ----------
    classes_ : ndarray
        The labels, sorted.
    coef_ : ndarray of shape (n_classes, n_features)
        In the original (unstandardised) units.
    intercept_ : ndarray of shape (n_classes,)
        In the original units.
    C_ : float
        The C that was used (chosen on the path when ``Cs`` is given).
    path_ : list of dict
        (C, val_accuracy, n_iter) for each C on the path; empty without ``Cs``.
    n_iter_ : int
        L-BFGS iterations of the final fit.
    """

    def __init__(
        self,
        C: float = 1.0,
        *,
        Cs: Sequence[float] | None = None,
        validation_fraction: float = 0.2,
        max_iter: int = 500,
        tol: float = 1e-4,
        device: str = "auto",
        random_state: int = 0,
    ):
        self.C = C
        self.Cs = Cs
        self.validation_fraction = validation_fraction
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> LinearProbe:
        """Fit on X (n_samples, n_features), float32 kept as float32 (memory maps are read, not copied to float64)."""
        X, y = validate_data(self, X, y, dtype=(np.float32, np.float64), order="C")
        check_classification_targets(y)
        self.classes_, targets = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ParameterError(f"y has one class ({self.classes_[0]!r}); a classifier needs at least two")
        for name in ("C", *(("Cs",) if self.Cs is not None else ())):
            values = np.atleast_1d(getattr(self, name))
            if not np.all(np.isfinite(values)) or np.any(values <= 0):
                raise ParameterError(
                    f"The {name!r} parameter of LinearProbe must be positive. Got {getattr(self, name)!r} instead."
                )
        device = resolve_device(self.device)
        features = torch.tensor(
            X, dtype=torch.float32, device=device
        )  # one float32 copy (a memory map is read-only)
        labels = torch.as_tensor(targets, device=device)
        self.path_: list[dict[str, float]] = []
        weights = None
        if self.Cs is not None:
            weights = self._path(features, labels, targets, device)
        else:
            self.C_ = float(self.C)
        mean, std = _moments(features)
        weights, self.n_iter_ = _fit(
            _standardise(features, mean, std),
            labels,
            len(self.classes_),
            self.C_,
            self.max_iter,
            self.tol,
            weights,
        )
        coef = weights[:-1] / std[:, None]  # back to the original units
        self.coef_ = coef.T.double().cpu().numpy()
        self.intercept_ = (weights[-1] - mean @ coef).double().cpu().numpy()
        return self

    def _path(
        self, features: torch.Tensor, labels: torch.Tensor, targets: np.ndarray, device: torch.device
    ) -> torch.Tensor:
        train, val = train_test_split(
            np.arange(len(targets)),
            test_size=self.validation_fraction,
            stratify=targets,
            random_state=self.random_state,
        )
        train, val = torch.as_tensor(train, device=device), torch.as_tensor(val, device=device)
        mean, std = _moments(features[train])
        fit_x, val_x = _standardise(features[train], mean, std), _standardise(features[val], mean, std)
        best, best_weights, weights = -1.0, None, None
        for C in sorted(
            float(c) for c in self.Cs
        ):  # strong to weak regularisation: each warm-starts the next
            weights, n_iter = _fit(
                fit_x, labels[train], len(self.classes_), C, self.max_iter, self.tol, weights
            )
            accuracy = float((_logits(val_x, weights).argmax(1) == labels[val]).float().mean())
            self.path_.append({"C": C, "val_accuracy": accuracy, "n_iter": n_iter})
            if accuracy > best:
                best, best_weights, self.C_ = accuracy, weights.clone(), C
        return best_weights

    def decision_function(self, X: Any) -> np.ndarray:
        """Class scores (logits): (n_samples, n_classes), or (n_samples,) for two classes (class 1 vs 0)."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, dtype=(np.float32, np.float64), reset=False)
        scores = np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, dtype=(np.float32, np.float64), reset=False)
        scores = np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_
        scores -= scores.max(axis=1, keepdims=True)
        probabilities = np.exp(scores)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        best = self.predict_proba(X).argmax(axis=1)
        return self.classes_[best]


def _moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation (constant features keep a scale of 1, as StandardScaler does)."""
    mean = features.mean(0, dtype=torch.float64).float()
    std = features.std(0, unbiased=False).clamp_min(0)
    return mean, torch.where(std > 1e-12, std, torch.ones_like(std))


def _standardise(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (features - mean) / std


def _logits(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return features @ weights[:-1] + weights[-1]


def _fit(
    features: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    C: float,
    max_iter: int,
    tol: float,
    start: torch.Tensor | None,
) -> tuple[torch.Tensor, int]:
    """Minimise mean cross-entropy + ||W||^2 / (2 C n): scikit-learn's objective divided by C n, same optimum."""
    n, d = features.shape
    weights = start.clone() if start is not None else torch.zeros(d + 1, n_classes, device=features.device)
    optimizer = torch.optim.LBFGS(
        [weights],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    penalty = 1.0 / (2.0 * C * n)
    rows = torch.arange(n, device=features.device)

    @torch.no_grad()
    def closure() -> torch.Tensor:
        # The softmax gradient in closed form: autograd would form X.T @ G, which torch runs several times
        # slower on CPUs than (G.T @ X).T for a few classes and many rows.
        log_p = torch.log_softmax(_logits(features, weights), dim=1)
        loss = -log_p[rows, labels].mean() + penalty * weights[:-1].pow(2).sum()
        residual = log_p.exp_()
        residual[rows, labels] -= 1
        residual /= n
        weights.grad = torch.cat(
            [
                (residual.T.contiguous() @ features).T + 2 * penalty * weights[:-1],
                residual.sum(0, keepdim=True),
            ]
        )
        return loss

    optimizer.step(closure)
    n_iter = optimizer.state[optimizer._params[0]].get("n_iter", 0)
    return weights.detach(), int(n_iter)
