"""Where images are decoded, decided by measurement: JPEGs on the network's GPU (nvJPEG, every pixel; or
DALI, where the ``featx[dali]`` extra is installed) or on the CPU decoding workers (big JPEGs at a reduced
DCT scale).

On a GPU machine the CPU decoders usually bound the job, but not always: a slow GPU, a big network that
leaves the GPU no time, or many cores can reverse it. So ``decoding="auto"`` times both on this machine,
on the bundled photos as JPEGs, and remembers the answer in the tuning file (:mod:`featx.models.tuning`),
as ``precision="auto"`` does. Elsewhere "auto" is "reduced": on a CPU the decoding workers already run
beside the network, and decoding in its process would only take cores from it.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import torch
from PIL import Image

from featx._machine import cpu_model
from featx.inputs import dali
from featx.inputs.jpeg import decode_on_device
from featx.models import tuning
from featx.models.preprocessing import Preprocessing

DEVICE_TRIAL_IMAGES = 256  # a GPU decodes a few dozen JPEGs in about the time of its kernel launches


def choose_decoding(requested: str, device: torch.device, preprocessing: Preprocessing) -> dict[str, Any]:
    """``{"decoding": ..., "why": ...}``: an explicit choice as given; "auto" measured on a GPU."""
    if requested == "dali":
        dali.require(device)
    if requested != "auto":
        return {"decoding": requested, "why": "given explicitly"}
    if device.type != "cuda":
        return {
            "decoding": "reduced",
            "why": f"on {device.type} the decoding workers decode beside the network",
        }
    key = decoding_key(device, preprocessing)
    entries = tuning.load_entries()
    known = entries.get(key)
    if isinstance(known, dict) and known.get("decoding") in ("device", "reduced", "dali"):
        return known
    record = measure(device, preprocessing)
    entries[key] = record
    tuning.save_entries(entries)
    return record


def decoding_key(device: torch.device, preprocessing: Preprocessing) -> str:
    """What a decoding measurement holds for: this device and CPU, this torch, this resize and crop."""
    return "|".join(
        (
            "decoding",
            tuning.device_model(device),
            cpu_model(),
            f"{os.cpu_count()} cores",
            f"torch {torch.__version__}",
            f"resize {preprocessing.resize} crop {preprocessing.crop} {preprocessing.interpolation}",
        )
    )


def measure(device: torch.device, preprocessing: Preprocessing, workers: int | None = None) -> dict[str, Any]:
    """Images per second decoded to ``crop x crop`` on ``device`` in batches (nvJPEG, and DALI where it is
    installed), against one CPU decoder times ``workers`` (default: every core but one, the decoders featx
    starts beside a GPU); the fastest path wins. Best of ``tuning.ROUNDS`` each."""
    workers = workers or max(1, (os.cpu_count() or 2) - 1)
    jpegs = trial_jpegs()
    on_cpu = replace(preprocessing, decoding="reduced")
    tiled = (jpegs * -(-DEVICE_TRIAL_IMAGES // len(jpegs)))[:DEVICE_TRIAL_IMAGES]

    def decode_on_cpu() -> None:
        for jpeg in jpegs:
            on_cpu.decode(jpeg)

    def decode_here() -> None:
        decoded = decode_on_device(tiled, device)
        preprocessing.crop_batch(decoded)  # type: ignore[arg-type]  # the trial photos all decode
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def decode_with_dali() -> None:
        dali.decode_crop(tiled, replace(preprocessing, decoding="dali"), device)
        torch.cuda.synchronize(device)

    decode_here()  # warm-up: nvJPEG's handles and buffers
    cpu = workers * len(jpegs) / min(_seconds(decode_on_cpu) for _ in range(tuning.ROUNDS))
    rates = {"device": len(tiled) / min(_seconds(decode_here) for _ in range(tuning.ROUNDS))}
    if device.type == "cuda" and dali.available():
        decode_with_dali()  # warm-up: DALI's pipeline is built on first use
        rates["dali"] = len(tiled) / min(_seconds(decode_with_dali) for _ in range(tuning.ROUNDS))
    rates["reduced"] = cpu
    choice = max(rates, key=rates.get)
    on_device = ", ".join(f"{name} {rate:.0f} images/s" for name, rate in rates.items() if name != "reduced")
    return {
        "decoding": choice,
        "why": (
            f"fastest: {device.type} decoding ({on_device}), {workers} CPU decoders "
            f"{cpu:.0f} images/s (one measured, times {workers})"
        ),
        "trials": {
            **{name: round(rate, 1) for name, rate in rates.items() if name != "reduced"},
            "cpu": round(cpu, 1),
            "cpu_workers": workers,
        },
        "decided": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def trial_jpegs() -> list[bytes]:
    """The bundled photos (scikit-learn's, cropped) as JPEG files, quality 90 as from a camera."""
    encoded = []
    for photo in tuning.sample_images():
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, "JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def _seconds(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start
