"""Camera-like JPEGs made from scikit-learn's two sample photographs: for the tests and the benchmarks
that need real photographs' content at a camera's sizes, without downloading any. No side effects on
import (unlike conftest.py, which limits BLAS threads), so benchmarks import it too."""

import io

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images


def mosaic(width: int, height: int, seed: int = 0) -> bytes:
    """A 3x3 mosaic of crops of the sample photographs at ``width`` x ``height``, as a quality-90 JPEG."""
    photos = [Image.fromarray(p) for p in load_sample_images().images]
    canvas = Image.new("RGB", (width, height))
    rng = np.random.default_rng(seed)
    for i in range(3):
        for j in range(3):
            x, y = rng.integers(0, 200), rng.integers(0, 100)
            tile = photos[(i + j + seed) % 2].crop((x, y, x + 400, y + 300))
            canvas.paste(
                tile.resize((width // 3 + 1, height // 3 + 1), Image.BICUBIC),
                (i * width // 3, j * height // 3),
            )
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
