"""Where choices measured on the machine that runs the network are remembered, so later runs pay nothing,
and the tools of measuring: timing, fidelity (min cosine), and real photos to measure on.

The choices themselves are the policies' (:mod:`featx.models.precision`, :mod:`featx.models.decoding`):
the same CPU flag meant a 2x speed-up on one AMD EPYC and a slow-down on an Intel Xeon without AMX, so
a rule could not tell them apart, and each choice is a short timed trial on this machine.

The results live in one JSON file (``$FEATX_TUNING_FILE``, else ``$XDG_CACHE_HOME/featx/tuning.json``,
else ``~/.cache/featx/tuning.json``), keyed by CPU or GPU model, torch version, device, backbone, weights
and node. A corrupt or foreign file is ignored with a warning and rewritten; it is never unpickled.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featx._files import save_or_warn
from featx._machine import cpu_model
from featx.options import MIN_COSINE

FORMAT = 1
ROUNDS = 3  # timing rounds per candidate
# A GPU runs a few dozen images in about the time of its kernel launches, so its precisions separate only
# at a job's batch size (on an H200, ResNet-50 on 48 images: fp16 0.99x fp32; on 256: 1.49x).
GPU_TRIAL_IMAGES = 256


def tuning_path() -> Path:
    if os.environ.get("FEATX_TUNING_FILE"):
        return Path(os.environ["FEATX_TUNING_FILE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "featx" / "tuning.json"


def device_model(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model() if device.type == "cpu" else device.type


def tuning_key(device: torch.device, fingerprint: Mapping[str, Any], min_cosine: float = MIN_COSINE) -> str:
    """What a measurement holds for: this processor, this torch, this network (weights, node, input size)
    and this fidelity bound."""
    crop = fingerprint.get("preprocessing", {}).get("crop")
    trial = (
        [f"trial {GPU_TRIAL_IMAGES} images"] if device.type == "cuda" else []
    )  # decisions from 48 are stale
    return "|".join(
        str(part)
        for part in (
            device_model(device),
            f"torch {torch.__version__}",
            device.type,
            fingerprint["backbone"],
            fingerprint["weights"],
            fingerprint["node"],
            f"{crop}px",
            f"cosine>={min_cosine}",
            *trial,
        )
    )


def forget(key: str) -> None:
    """Drop the remembered decision for ``key`` (``featx tune --again``)."""
    entries = load_entries()
    if entries.pop(key, None) is not None:
        save_entries(entries)


def remember(key: str, field: str, value: Any) -> None:
    """Add one fact to ``key``'s record (e.g. why int8 was refused), keeping the rest."""
    entries = load_entries()
    entries.setdefault(key, {})[field] = value
    save_entries(entries)


def load_entries() -> dict[str, Any]:
    path = tuning_path()
    if not path.exists():
        return {}
    try:
        content = json.loads(path.read_text())
        if (
            not isinstance(content, dict)
            or content.get("format") != FORMAT
            or not isinstance(content.get("entries"), dict)
        ):
            raise ValueError("not a featx tuning file of format 1")
        return content["entries"]
    except (OSError, ValueError) as error:
        warnings.warn(
            f"ignoring the tuning file {path} ({error}); featx measures again and rewrites it", stacklevel=3
        )
        return {}


def save_entries(entries: dict[str, Any]) -> None:
    """Write atomically; a read-only home only costs the memory of the measurement, with a warning."""
    text = json.dumps({"format": FORMAT, "entries": entries}, indent=1, sort_keys=True)
    save_or_warn(
        tuning_path(),
        lambda tmp: tmp.write_text(text),
        "the tuning file",
        "the next run measures again",
        stacklevel=3,
    )


def sample_images() -> list[np.ndarray]:
    """Eight real photos with no download: crops of scikit-learn's two sample images (china, flower)."""
    from sklearn.datasets import load_sample_images

    crops = []
    for photo in load_sample_images().images:
        height, width = photo.shape[:2]
        for top, left in ((0, 0), (height // 3, width // 3), (0, width // 3), (height // 3, 0)):
            crops.append(
                np.ascontiguousarray(photo[top : top + 2 * height // 3, left : left + 2 * width // 3])
            )
    return crops


def timed(run: Callable[[], np.ndarray], warm_up: bool = True) -> tuple[float, np.ndarray]:
    """Seconds of one call (after a warm-up call, the first time), and its output."""
    if warm_up:
        run()
    start = time.perf_counter()
    output = run()
    return time.perf_counter() - start, output


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest row-wise cosine similarity; two all-zero rows (a ReLU network's dead output for some
    image, common under random init) agree perfectly."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cosines = np.sum(a * b, axis=1) / np.maximum(norm_a * norm_b, 1e-12)
    return float(np.min(np.where((norm_a == 0) & (norm_b == 0), 1.0, cosines)))
