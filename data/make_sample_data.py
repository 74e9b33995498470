"""Write the bundled sample data as real image files with a manifest: nothing here is committed.

    python data/make_sample_data.py                 # 2,000 train + 1,000 test Fashion-MNIST, and digits
    python data/make_sample_data.py --train 500 --test 200

Fashion-MNIST (MIT licence) comes from Debian's ``dataset-fashion-mnist`` package (apt), installed under
/usr/share/datasets/fashion-mnist/ as idx files; scikit-learn's 8x8 ``load_digits`` is the second dataset,
the one where ImageNet features are expected to help least. Each dataset gets
``data/<name>/images/<split>/<label>/<n>.png`` and ``data/<name>/manifest.csv`` (path, label, split).
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
]
HERE = Path(__file__).resolve().parent


def read_idx(path: Path) -> np.ndarray:
    """Parse an (optionally gzipped) idx file: big-endian dims after a 4-byte magic."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    n_dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def write_dataset(name: str, splits: dict[str, tuple[np.ndarray, list[str]]]) -> Path:
    root = HERE / name
    rows = []
    for split, (images, labels) in splits.items():
        for n, (pixels, label) in enumerate(zip(images, labels)):
            relative = Path("images") / split / label / f"{n:05d}.png"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / relative)
            rows.append((relative.as_posix(), label, split))
    manifest = root / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(manifest, index=False)
    return manifest


def fashion_mnist(n_train: int, n_test: int) -> Path:
    if not FASHION_DIR.is_dir():
        sys.exit(f"{FASHION_DIR} not found: install it with `apt-get install dataset-fashion-mnist`")
    splits = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = read_idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")[:n]
        labels = read_idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")[:n]
        splits[split] = (images, [FASHION_CLASSES[i] for i in labels])
    return write_dataset("fashion_mnist", splits)


def digits(test_fraction: float = 1 / 3) -> Path:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = np.round(bunch.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
    labels = [str(t) for t in bunch.target]
    x_train, x_test, y_train, y_test = train_test_split(
        pixels, labels, test_size=test_fraction, stratify=labels, random_state=0
    )
    return write_dataset("digits", {"train": (x_train, y_train), "test": (x_test, y_test)})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--train", type=int, default=2000, help="Fashion-MNIST training images (default 2000)"
    )
    parser.add_argument("--test", type=int, default=1000, help="Fashion-MNIST test images (default 1000)")
    args = parser.parse_args()
    for manifest in (fashion_mnist(args.train, args.test), digits()):
        print(f"{manifest} ({len(pd.read_csv(manifest))} images)")


if __name__ == "__main__":
    main()
