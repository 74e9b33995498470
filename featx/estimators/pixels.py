"""``RawPixels``: the baseline every transfer claim must beat, as a scikit-learn transformer."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from featx.errors import ImageError
from featx.inputs.batches import as_image_list
from featx.inputs.images import load_rgb
from featx.options import ON_ERROR, POSITIVE_INT, validate


class RawPixels(TransformerMixin, BaseEstimator):
    """Each image resized to ``size`` x ``size`` and flattened: its pixels in [0, 1] are the features.

    Decoding is featx's (EXIF orientation, alpha over white, 16-bit, CMYK), so the only difference from
    [`featx.PretrainedFeatures`][featx.PretrainedFeatures] on the same inputs is the representation.

    Parameters
    ----------
    size : int, default=32
        Side of the square every image is resized to (bilinear).
    grayscale : bool, default=False
        One channel instead of three.
    on_error : {"raise", "nan"}, default="raise"
        What a bad image does: raise its [`featx.ImageError`][featx.errors.ImageError], or give a NaN row (listed in ``errors_``).
    """

    _parameter_constraints = {"size": POSITIVE_INT, "on_error": ON_ERROR}

    def __init__(self, size: int = 32, *, grayscale: bool = False, on_error: str = "raise"):
        self.size = size
        self.grayscale = grayscale
        self.on_error = on_error

    def fit(self, X: Any, y: Any = None) -> RawPixels:
        """Validate the parameters and the input; nothing is learned."""
        validate(type(self).__name__, self.get_params(deep=False), self._parameter_constraints)
        as_image_list(X)
        self.n_features_out_ = self.size * self.size * self._channels
        return self

    def transform(self, X: Any) -> np.ndarray:
        """(n_images, size * size * channels) float32, row-major (row, column, channel)."""
        check_is_fitted(self, "n_features_out_")
        images = as_image_list(X)
        features = np.full((len(images), self.n_features_out_), np.nan, dtype=np.float32)
        self.errors_: list[ImageError] = []
        for index, image in enumerate(images):
            try:
                picture = load_rgb(image, index)
            except ImageError as error:
                if self.on_error == "raise":
                    raise
                self.errors_.append(error)
                continue
            picture = picture.convert("L") if self.grayscale else picture
            resized = picture.resize((self.size, self.size), Image.BILINEAR)
            features[index] = np.asarray(resized, dtype=np.float32).ravel() / 255.0
        if self.errors_:
            warnings.warn(
                f"{len(self.errors_)} of {len(images)} images failed and are NaN rows "
                f"(first: {self.errors_[0]}); see errors_ for all",
                stacklevel=2,
            )
        return features

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``pixel_<row>_<column>_<channel>``, channel one of r, g, b (or l in grayscale)."""
        check_is_fitted(self, "n_features_out_")
        channels = "l" if self.grayscale else "rgb"
        return np.asarray(
            [f"pixel_{r}_{c}_{ch}" for r in range(self.size) for c in range(self.size) for ch in channels],
            dtype=object,
        )

    @property
    def _channels(self) -> int:
        return 1 if self.grayscale else 3

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # X is a sequence of images, not a feature matrix
        return tags
