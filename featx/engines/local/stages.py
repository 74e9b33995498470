"""A local job's stages on the pipeline (:mod:`featx.engines.pipeline`): what the decoding thread and the
issuing thread do with a worker's batch, and the job around them (:class:`LocalJob`), one for a file list
and a shard stream alike.

The decoding thread moves the workers' pixels to the device and decodes the JPEGs left for it (nvJPEG),
full size; the issuing thread crops those, gathers full network batches (:class:`Batches`), runs the
network and hands each batch's vectors to the commit thread. On a GPU every tensor that crosses from the
decoding stream is marked as used by the compute stream (``record_stream``), so its memory goes back to
the decoder's pool only after the kernels that read it have run: the lifetimes, not a host wait, keep
nvJPEG from writing into memory queued work still reads (pytorch/vision#9606).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from featx.cache import Store
from featx.engines.base import RunOptions
from featx.engines.keyed import Uncropped, decode_uncropped
from featx.engines.local.batches import Batches
from featx.engines.pipeline import Lanes, Pipeline
from featx.errors import ImageError

#: The decodings that decode JPEGs on the network's device, in the decoding thread.
ON_DEVICE = ("device", "dali")


class Work(NamedTuple):
    """A worker's batch, as the job's thread hands it on: ``pixels`` (decoded by the workers) of ``keys``,
    JPEGs for the device as ``(index, source, key, bytes)``, and how many images the job should compute."""

    keys: list[str]
    pixels: torch.Tensor | None
    jpegs: list[tuple[int, str, str, Any]]
    expected: int


class Decoded(NamedTuple):
    """A batch after the decoding stage: the workers' pixels on the network's device, the JPEGs decoded."""

    keys: list[str]
    pixels: torch.Tensor | None
    jpegs: Uncropped | None
    expected: int


class LocalJob:
    """The pipeline, the network's batches and the failures the device found, for one job. The job's
    thread calls :meth:`put` per worker batch, :meth:`take_failures` to learn of the device's failures,
    and :meth:`finish` at the end (or at the first failure with ``fail_fast``)."""

    def __init__(self, network: Any, store: Store, options: RunOptions):
        self.network, self.options = network, options
        self.batches = Batches(network, store, options.forward_batch or options.batch_size)
        self._on_device = network.preprocessing.decoding in ON_DEVICE
        self._failures: list[ImageError] = []  # appended by the decoding thread
        self._lanes = Lanes(network.device)
        self.pipeline = Pipeline(self.decode, self.issue, self._lanes)

    def __enter__(self) -> LocalJob:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            self.pipeline.__exit__(kind, error, traceback)
        finally:
            self.batches.__exit__(kind, error, traceback)

    def put(self, work: Work) -> None:
        if work.keys or work.jpegs:  # a batch all cached or failed costs the threads nothing
            self.pipeline.put(work)

    def take_failures(self) -> list[ImageError]:
        """The device's failures found since the last call."""
        taken = self._failures[:]  # the decoding thread only appends: drop exactly what was copied
        del self._failures[: len(taken)]
        return taken

    def finish(self) -> None:
        """Let every batch put so far through, then commit what is left and wait for the commits."""
        self.pipeline.drain()
        self.batches.commit_all()

    def decode(self, work: Work) -> Decoded:
        """The decoding thread: the workers' pixels to the device (where JPEGs are decoded there, so that
        a batch's rows share one device) and the JPEGs decoded, full size."""
        device, pixels = self.network.device, work.pixels
        if pixels is not None and self._on_device:
            pixels = pixels.to(device, non_blocking=True)
        jpegs = None
        if work.jpegs:
            preprocessing = self.network.preprocessing
            jpegs = decode_uncropped(work.jpegs, preprocessing, device, self.options.max_pixels)
            if jpegs.cropped.errors:
                self._failures.extend(jpegs.cropped.errors)
                if self.options.fail_fast:
                    self.pipeline.stop()  # nothing after this batch is computed
        return Decoded(work.keys, pixels, jpegs, work.expected)

    def issue(self, decoded: Decoded) -> None:
        """The issuing thread: crop, gather full batches, run the network on each, hand it to the commit."""
        batches = self.batches
        if self._lanes.cuda:
            _used_here(decoded)
        if decoded.keys:
            batches.add(decoded.keys, decoded.pixels)
        if decoded.jpegs is not None:
            if decoded.jpegs.images:
                cropped = self.network.preprocessing.crop_batch(decoded.jpegs.images)
                batches.add(decoded.jpegs.keys, cropped)
            if decoded.jpegs.cropped.keys:
                batches.add(decoded.jpegs.cropped.keys, decoded.jpegs.cropped.pixels)
        batches.commit_full(decoded.expected)


def _used_here(decoded: Decoded) -> None:
    """Mark the device tensors made on the decoding stream as read by this thread's stream: freed, their
    memory waits for this stream's queued work before the allocator hands it out again."""
    stream = torch.cuda.current_stream()
    tensors = [decoded.pixels]
    if decoded.jpegs is not None:
        tensors += [*decoded.jpegs.images, decoded.jpegs.cropped.pixels]
    for tensor in tensors:
        if tensor is not None and tensor.is_cuda:
            tensor.record_stream(stream)
