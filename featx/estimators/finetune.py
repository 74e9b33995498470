"""``FineTunedClassifier``: the field's recipe beyond frozen features, as a scikit-learn classifier.

1. Replace the classifier head: the backbone truncated at its last pooling layer, then a new linear layer.
2. Train the head with the base frozen (``epochs`` at ``lr``).
3. Optionally unfreeze the last ``unfreeze`` blocks and continue at a lower rate (``finetune_epochs`` at
   ``finetune_lr``), deeper blocks slower still (``lr_decay`` per block: discriminative learning rates).

Both phases stop early when accuracy on a stratified validation split stops improving for ``patience``
epochs, and keep the best epoch's weights. BatchNorm statistics stay frozen (eval mode) throughout: with
small batches on a CPU, re-estimating them hurts more than it helps. No augmentation: this measures what
fine-tuning buys over frozen features, it is not a training framework. ``save_trunk`` writes the
fine-tuned trunk for ``PretrainedFeatures(weights=PATH)``: fine-tune, then cache features.
"""

from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d
from torch import nn

from featx.errors import ParameterError
from featx.estimators._pickling import PicklesLight
from featx.inputs.batches import as_image_list
from featx.models._registry import get_backbone
from featx.models.blocks import blocks
from featx.models.checkpoints import save_trunk
from featx.models.devices import resolve_device
from featx.models.nodes import feature_size
from featx.models.pooling import Pool, resolve_pooling
from featx.models.preprocessing import Normalise
from featx.models.spec import NetworkSpec
from featx.models.weights import resolve_weights
from featx.options import FRACTION, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, validate


class _Classifier(nn.Module):
    """Truncated backbone -> pooled features -> linear head."""

    def __init__(self, extractor: nn.Module, pool: Pool, n_features: int, n_classes: int):
        super().__init__()
        self.extractor, self.pool = extractor, pool
        self.head = nn.Linear(n_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.extractor(x)["features"]))


class FineTunedClassifier(PicklesLight, ClassifierMixin, BaseEstimator):
    """A pretrained backbone with a new head, trained on images; optionally its last blocks fine-tuned.

    Parameters
    ----------
    backbone : str or Backbone, default="efficientnet_lite0"
        As in [`PretrainedFeatures`][featx.PretrainedFeatures].
    weights : str, path or None, default="DEFAULT"
        As in [`PretrainedFeatures`][featx.PretrainedFeatures].
    unfreeze : int, default=0
        Blocks (see `featx.models.blocks.blocks`) trained in phase 2; 0 trains the head only.
    epochs : int, default=10
        Head phase: at most this many epochs.
    lr : float, default=1e-3
        Head phase: the AdamW learning rate.
    finetune_epochs : int, default=3
        Phase 2: at most this many epochs.
    finetune_lr : float, default=1e-4
        Phase 2: the learning rate of the top unfrozen block; the head learns at ``finetune_lr / lr_decay``.
    lr_decay : float, default=0.5
        Phase 2: each block below the top one learns at ``lr_decay`` times the rate of the one above.
    batch_size : int, default=32
        Mini-batch size.
    validation_fraction : float, default=0.1
        The stratified share of the training images held out for early stopping.
    patience : int, default=2
        Epochs without improvement before stopping.
    device : str, default="auto"
        "auto", "cpu", "cuda", ...
    random_state : int, default=0
        Seeds the split, the head's initialisation and the batch order.

    Attributes
    ----------
    classes_ : ndarray
        The labels, sorted.
    history_ : list of dict
        One dict per epoch: phase, epoch, train_loss, val_accuracy, seconds.
    state_dict_ : dict of str to Tensor
        The trained weights (pickled with the estimator; the module is rebuilt from them).
    """

    _parameter_constraints = {
        "unfreeze": NON_NEGATIVE_INT,
        "epochs": POSITIVE_INT,
        "lr": POSITIVE,
        "finetune_epochs": NON_NEGATIVE_INT,
        "finetune_lr": POSITIVE,
        "lr_decay": FRACTION,
        "batch_size": POSITIVE_INT,
        "validation_fraction": FRACTION,
        "patience": NON_NEGATIVE_INT,
    }

    _TRANSIENT = ("_model",)  # rebuilt from state_dict_ after unpickling

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        *,
        weights: Any = "DEFAULT",
        unfreeze: int = 0,
        epochs: int = 10,
        lr: float = 1e-3,
        finetune_epochs: int = 3,
        finetune_lr: float = 1e-4,
        lr_decay: float = 0.5,
        batch_size: int = 32,
        validation_fraction: float = 0.1,
        patience: int = 2,
        device: str = "auto",
        random_state: int = 0,
    ):
        self.backbone = backbone
        self.weights = weights
        self.unfreeze = unfreeze
        self.epochs = epochs
        self.lr = lr
        self.finetune_epochs = finetune_epochs
        self.finetune_lr = finetune_lr
        self.lr_decay = lr_decay
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.device = device
        self.random_state = random_state

    # -- fitting -------------------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any) -> FineTunedClassifier:
        """Train the head, then (``unfreeze > 0``) the last blocks, on the images X with labels y."""
        params, owner = self.get_params(deep=False), type(self).__name__
        validate(owner, params, self._parameter_constraints)
        NetworkSpec.from_params(params, owner)  # backbone, weights and device, as every door checks them
        images = as_image_list(X)
        self.classes_, targets = np.unique(_labels(y, len(images)), return_inverse=True)
        if len(self.classes_) < 2:
            raise ParameterError(f"y has one class ({self.classes_[0]!r}); a classifier needs at least two")
        train, val = _validation_split(targets, self.validation_fraction, self.random_state)
        device = resolve_device(self.device)
        torch.manual_seed(self.random_state)
        model = self._build(len(self.classes_)).to(device)
        pixels = self._decode(images)
        data = (torch.as_tensor(targets), train, val, device)
        names = blocks(model.extractor)
        if self.unfreeze < 0 or self.unfreeze > len(names):
            raise ParameterError(
                f"unfreeze={self.unfreeze}; {self.backbone} has {len(names)} blocks (0 to {len(names)})"
            )
        self.history_: list[dict[str, Any]] = []
        model.requires_grad_(False)
        # Phase 1: with the base frozen, its pooled features never change: compute them once.
        features = self._pooled(model, pixels, device)
        model.head.requires_grad_(True)
        self._train(
            lambda rows: model.head(features[rows].to(device)),
            model,
            [{"params": model.head.parameters(), "lr": self.lr}],
            self.epochs,
            "head",
            data,
        )
        if self.unfreeze:
            parameters = dict(model.extractor.named_parameters())
            groups = [{"params": model.head.parameters(), "lr": self.finetune_lr / self.lr_decay}]
            for depth, block in enumerate(reversed(names[-self.unfreeze :])):
                for name in block:
                    parameters[name].requires_grad_(True)
                groups.append(
                    {"params": [parameters[n] for n in block], "lr": self.finetune_lr * self.lr_decay**depth}
                )
            self._train(
                lambda rows: model(self._scale(pixels[rows], device)),
                model,
                groups,
                self.finetune_epochs,
                f"last {self.unfreeze} blocks",
                data,
            )
        self.state_dict_ = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self._model = model
        return self

    def _train(
        self, forward: Any, model: _Classifier, groups: list[dict], epochs: int, phase: str, data: tuple
    ) -> None:
        """AdamW over ``groups`` for at most ``epochs``; keeps the epoch with the best validation accuracy."""
        targets, train, val, device = data
        optimizer = torch.optim.AdamW(groups, weight_decay=1e-4)
        generator = torch.Generator().manual_seed(self.random_state)
        best, best_state, stale = -1.0, None, 0
        for epoch in range(epochs):
            start, losses = time.perf_counter(), []
            model.eval()  # frozen BatchNorm statistics and no dropout, while gradients still flow
            for rows in _split(
                torch.as_tensor(train)[torch.randperm(len(train), generator=generator)], self.batch_size
            ):
                loss = nn.functional.cross_entropy(forward(rows), targets[rows].to(device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            with torch.no_grad():
                predicted = torch.cat(
                    [forward(rows).argmax(1).cpu() for rows in torch.as_tensor(val).split(128)]
                )
            accuracy = float((predicted == targets[val]).float().mean())
            self.history_.append(
                {
                    "phase": phase,
                    "epoch": epoch + 1,
                    "train_loss": float(np.mean(losses)),
                    "val_accuracy": accuracy,
                    "seconds": time.perf_counter() - start,
                }
            )
            if accuracy > best:
                best, best_state, stale = accuracy, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        model.load_state_dict(best_state)

    # -- predicting ----------------------------------------------------------------------------------------

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self, "state_dict_")
        model = self._loaded()
        device = next(model.parameters()).device
        logits = self._logits(model, self._decode(as_image_list(X)), device)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def save_trunk(self, path: str | os.PathLike) -> Path:
        """Write the fine-tuned trunk, under the backbone's own key names and without the head, as a file
        ``PretrainedFeatures(backbone, weights=path)`` loads (``.safetensors`` by that suffix, else a
        ``torch.save`` state dict)."""
        check_is_fitted(self, "state_dict_")
        trunk = {k[len("extractor.") :]: v for k, v in self.state_dict_.items() if k.startswith("extractor.")}
        save_trunk(trunk, path, get_backbone(self.backbone).skeleton().state_dict())
        return Path(path)

    # -- internals -----------------------------------------------------------------------------------------

    def _build(self, n_classes: int) -> _Classifier:
        spec = get_backbone(self.backbone)
        resolved = resolve_weights(spec, self.weights)
        self._preprocessing = resolved.preprocessing
        self._normalise = Normalise(resolved.preprocessing)
        extractor = spec.truncated(resolved.state_dict, None, resolved.build_args)  # as the frozen network
        pooling = Pool(resolve_pooling(spec, None, None), spec.prefix_tokens)
        return _Classifier(extractor, pooling, feature_size(spec), n_classes)

    def _decode(self, images: list) -> torch.Tensor:
        """All images resized and cropped, as one uint8 tensor (150 kB per 224 px image)."""
        return torch.stack([self._preprocessing.decode(image, index) for index, image in enumerate(images)])

    def _scale(self, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
        return self._normalise.to(device)(batch.to(device))

    @torch.inference_mode()
    def _pooled(self, model: _Classifier, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
        model.eval()
        return torch.cat(
            [
                model.pool(model.extractor(self._scale(chunk, device))["features"])
                for chunk in _split(pixels, self.batch_size * 4)
            ]
        ).clone()

    @torch.inference_mode()
    def _logits(self, model: _Classifier, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
        model.eval()
        return torch.cat([model(self._scale(chunk, device)) for chunk in _split(pixels, self.batch_size * 4)])

    def _loaded(self) -> _Classifier:
        if getattr(self, "_model", None) is None:
            self._model = self._build(len(self.classes_)).to(resolve_device(self.device))
            self._model.load_state_dict(self.state_dict_)
        return self._model


def _split(rows: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """``rows`` in chunks of ``size``. A size past their count is one chunk, as torch's ``split`` would give
    it were it not to fail ("Overflow when unpacking long long") past a C long: ``batch_size=2**70``."""
    return rows.split(min(size, max(len(rows), 1)))


def _labels(y: Any, n_images: int) -> np.ndarray:
    """y as scikit-learn takes a classifier's targets (1-D, class labels), one per image, none missing."""
    if y is None:
        raise ParameterError("fit needs y: one label per image")
    y = column_or_1d(y, warn=True)
    missing = np.flatnonzero(pd.isna(y))
    if missing.size:
        first = f"the first at row {missing[0]}"
        raise ParameterError(
            f"y has {missing.size} missing label(s) (None or NaN; {first}); label or drop them"
        )
    if len(y) != n_images:
        raise ParameterError(f"{n_images} images but {len(y)} labels")
    check_classification_targets(y)
    return y


def _validation_split(targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train / validation rows; where a class cannot be on both sides, refused in featx's terms."""
    counts = np.bincount(targets)
    held_out = math.ceil(fraction * len(targets))  # scikit-learn's rounding of a float test_size
    if counts.min() < 2 or not len(counts) <= held_out <= len(targets) - len(counts):
        raise ParameterError(
            f"validation_fraction={fraction} of {len(targets)} images holds {held_out} out for validation, "
            f"and a stratified split needs each of the {len(counts)} classes on both sides (the smallest "
            f"has {counts.min()} image(s)); add images, or change validation_fraction"
        )
    return train_test_split(np.arange(len(targets)), test_size=fraction, stratify=targets, random_state=seed)
