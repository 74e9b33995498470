"""CPU decoding: what each way of turning a JPEG into the network's pixels costs, and how far its vector is
from full decoding with real weights (EfficientNet-Lite0's ImageNet weights from pip).

Four ways, per image (decode + resize + crop, one thread, best of ``--rounds``):

- full, PIL resize: featx's ``decoding="full"``, the pixels of torchvision's and timm's own transforms;
- full, tensor resize: the uint8 tensor resize featx used before (``v2.Resize`` on the decoded tensor);
- reduced, 1x: the DCT scale rule featx used before (decoded short side at least the resize), tensor resize;
- reduced, 2x: featx's ``decoding="reduced"`` (decoded short side at least twice the resize), PIL resize.

    python benchmarks/decoding.py [--rounds 5]

Photos: mosaics of scikit-learn's two sample photographs at each size, saved as quality-90 JPEGs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import featx.inputs.images as images
from featx import build_network
from featx._machine import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sample_photos import mosaic  # noqa: E402  (the tests' photographs, made the same way)

SIZES = [(400, 300), (1024, 683), (1920, 1281), (4032, 3024)]


def best_ms(run: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    network = build_network("efficientnet_lite0", device="cpu", precision="fp32", decoding="full")
    full = network.preprocessing
    reduced = dataclasses.replace(full, decoding="reduced")
    tensor_geometry = dataclasses.replace(full, decoding="device").geometry()  # the uint8 tensor resize

    def tensor_full(data: bytes) -> torch.Tensor:
        return tensor_geometry(images.load_rgb(data, resize=full.resize))

    def reduced_once(data: bytes) -> torch.Tensor:
        margin, images.REDUCED_MARGIN = images.REDUCED_MARGIN, 1
        try:
            return tensor_geometry(images.load_rgb(data, resize=full.resize, reduced=True))
        finally:
            images.REDUCED_MARGIN = margin

    ways = {
        "full, PIL resize": full.decode,
        "full, tensor resize": tensor_full,
        "reduced 1x, tensor resize": reduced_once,
        "reduced 2x, PIL resize": reduced.decode,
    }
    print(f"CPU: {cpu_model()}; torch {torch.__version__}; one thread; ms per image (cosine to full, PIL)")
    print("| photo | " + " | ".join(ways) + " |")
    print("|---" * (len(ways) + 1) + "|")
    for seed, (width, height) in enumerate(SIZES):
        data = mosaic(width, height, seed)
        with torch.inference_mode():
            reference = network(full.decode(data)[None])[0]
            cells = []
            for way in ways.values():
                vector = network(way(data)[None])[0]
                cosine = vector @ reference / np.linalg.norm(vector) / np.linalg.norm(reference)
                cells.append(f"{best_ms(functools.partial(way, data), args.rounds):.1f} ({cosine:.4f})")
        print(f"| {width}x{height} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
