"""The precision policy: which precision a network runs in, decided by measurement, not by rule.

An explicit precision is honoured (int8 only after its fidelity check on held-out images); "auto" times
the network in each candidate this device supports on real photos and keeps the fastest whose features
stay within ``min_cosine`` of fp32's, remembering the answer in the tuning file (:mod:`featx.models.tuning`).
The policy receives the network as a callable, ``forward(precision, batch)``, so it never reaches into
:class:`~featx.models.network.FrozenNetwork`, which only runs what it is given. Each decision has one
name: :func:`choose_precision`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from featx.errors import ImageError, ParameterError
from featx.models import quantize, tuning
from featx.models.preprocessing import Preprocessing
from featx.options import MIN_COSINE

Forward = Callable[[str, torch.Tensor], np.ndarray]  # (precision, uint8 batch) -> vectors


class TrialImages:
    """The images a precision is judged on: the bundled photos and the same photos mirrored and upside
    down, or alternate images of the user's ``calibration`` set (a folder, manifest, shards or table).
    The first half calibrates int8, the second is held out to check fidelity."""

    def __init__(self, preprocessing: Preprocessing, calibration: str | None):
        self.preprocessing, self.calibration = preprocessing, calibration
        self._batches: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def held_out_name(self) -> str:
        return "photos" if self.calibration is None else f"images of {self.calibration}"

    def batches(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(calibration batch, held-out batch) of uint8 images, decoded once."""
        if self._batches is None:
            if self.calibration is None:
                photos = tuning.sample_images()
                held_out = [p[:, ::-1] for p in photos] + [p[::-1] for p in photos]
                decoded = [
                    torch.stack([self.preprocessing.decode(p.copy()) for p in images])
                    for images in (photos, held_out)
                ]
            else:
                images = [self._decode(source) for source in quantize.calibration_sources(self.calibration)]
                decoded = [torch.stack(images[0::2]), torch.stack(images[1::2])]
            self._batches = (decoded[0], decoded[1])
        return self._batches

    def digest(self) -> str:
        """What the int8 calibration was fitted to: part of an int8 network's fingerprint."""
        return quantize.calibration_digest(self.batches()[0])

    def _decode(self, source: Any) -> torch.Tensor:
        try:
            return self.preprocessing.decode(source)
        except ImageError as error:
            raise ParameterError(
                f"calibration={self.calibration!r}: {error}; remove that image or choose another calibration set"
            ) from None


class Trial:
    """The timed trial of one precision on :class:`TrialImages`, through ``forward``."""

    def __init__(self, images: TrialImages, device: torch.device, forward: Forward):
        self.images, self.device, self.forward = images, device, forward
        self._reference: np.ndarray | None = None
        self._tiled: torch.Tensor | None = None
        self._warmed: set[str] = set()

    def int8_cosine(self) -> float:
        """Cosine of int8 to fp32 features on the held-out images (raises ``Int8Unavailable``)."""
        held_out = self.images.batches()[1]
        return tuning.min_cosine(self.forward("int8", held_out), self.forward("fp32", held_out))

    def __call__(self, precision: str) -> tuple[float, float]:
        """(images per second, min cosine to fp32) of the network in ``precision`` on the trial images."""
        batch = torch.cat(self.images.batches())
        if self._reference is None:
            self._reference = self.forward("fp32", batch)
        timing = self._timing_batch(batch)
        try:
            seconds, output = tuning.timed(
                lambda: self.forward(precision, timing), warm_up=precision not in self._warmed
            )
        except quantize.Int8Unavailable:
            return 0.0, 0.0  # never chosen
        self._warmed.add(precision)
        return len(timing) / seconds, tuning.min_cosine(output[: len(batch)], self._reference)

    def _timing_batch(self, photos: torch.Tensor) -> torch.Tensor:
        """On a GPU the photos tiled to ``tuning.GPU_TRIAL_IMAGES`` (unless fp32 runs out of memory there):
        a few dozen images cannot tell fp16 from fp32 on a GPU."""
        if self.device.type != "cuda":
            return photos
        if self._tiled is None:
            repeats = -(-tuning.GPU_TRIAL_IMAGES // len(photos))
            tiled = photos.repeat(repeats, 1, 1, 1)[: tuning.GPU_TRIAL_IMAGES]
            try:  # this forward is also fp32's warm-up at the tiled size
                self.forward("fp32", tiled)
                self._tiled = tiled
                self._warmed.add("fp32")
            except torch.cuda.OutOfMemoryError:  # the allocator keeps what it freed for the photos alone
                self._tiled = photos
        return self._tiled


def choose_precision(
    requested: str,
    key: str,
    device: torch.device,
    trial: Trial,
    min_cosine: float = MIN_COSINE,
    name: str = "this network",
) -> dict[str, Any]:
    """``{"precision": ..., "why": ...}`` for a network whose tuning key is ``key``.

    Explicit: honoured, int8 only if its features keep ``min_cosine`` on held-out images (else the choice
    "auto" would make without int8, with a warning, and the refusal remembered). "auto": measured.
    """
    candidates = precision_candidates(device)
    if requested == "int8":
        try:
            cosine = trial.int8_cosine()
            problem = None
            if cosine < min_cosine:
                problem = (
                    f"int8 features reach cosine {cosine:.4f} to fp32 on held-out {trial.images.held_out_name}, "
                    f"under the bound {min_cosine}"
                )
        except quantize.Int8Unavailable as error:
            problem = f"int8 is unavailable for {name} here ({error})"
        if problem is None:
            return {
                "precision": "int8",
                "why": f"given explicitly; cosine {cosine:.4f} to fp32 on held-out {trial.images.held_out_name}",
            }
        fallback = _measured(key, [c for c in candidates if c != "int8"], trial, min_cosine)
        tuning.remember(key, "int8_refused", problem)
        warnings.warn(
            f"{problem}; using {fallback['precision']} instead (precision='auto' would choose it)",
            stacklevel=4,
        )
        return {**fallback, "why": f"{problem}; fell back to {fallback['precision']}"}
    if requested != "auto":
        return {"precision": requested, "why": "given explicitly"}
    return _measured(key, candidates, trial, min_cosine)


def precision_candidates(device: torch.device) -> list[str]:
    """The precisions this device can run, fp32 first (the reference)."""
    if device.type == "cuda":
        return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    if device.type != "cpu":
        return ["fp32"]
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return ["fp32"] + (["bf16"] if bf16 else []) + (["int8"] if quantize.int8_supported() else [])


def _measured(key: str, candidates: list[str], trial: Trial, bound: float = MIN_COSINE) -> dict[str, Any]:
    """The remembered decision for ``key``, or a new one: the fastest candidate with cosine >= ``bound``."""
    entries = tuning.load_entries()
    known = entries.get(key)
    if isinstance(known, dict) and known.get("precision") in candidates:
        return known
    trials: dict[str, dict[str, float]] = {}
    for _ in range(tuning.ROUNDS):  # interleaved, best of each: a busy neighbour slows every candidate alike
        for precision in candidates:
            images_per_s, cosine = trial(precision)
            best = trials.setdefault(precision, {"images_per_s": 0.0, "min_cosine": round(cosine, 5)})
            best["images_per_s"] = max(best["images_per_s"], round(images_per_s, 2))
    # fp32 is the reference: faithful by definition, even where a near-dead random-init network's
    # vectors are so small (1e-7) that rounding noise alone moves their direction
    faithful = [p for p in candidates if p == "fp32" or trials[p]["min_cosine"] >= bound]
    best = max(faithful, key=lambda p: trials[p]["images_per_s"])
    others = ", ".join(
        f"{p} {t['images_per_s']} images/s (cosine {t['min_cosine']})" for p, t in trials.items()
    )
    record = {
        "precision": best,
        "why": f"fastest with cosine >= {bound} to fp32: {others}",
        "trials": trials,
        "decided": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    entries[key] = {**(known if isinstance(known, dict) else {}), **record}
    tuning.save_entries(entries)
    return record
