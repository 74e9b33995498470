"""The GPU job's scheduling on any machine: the local job's own pipeline with stand-in stages.

    python benchmarks/gpu_overlap.py                          # 8 ms decode, 8 ms forward a batch of 64
    python benchmarks/gpu_overlap.py --decode-ms 4 --forward-ms 8 --batches 300

A cold GPU job overlaps its decoding (nvJPEG, the decoding thread) with its network (the issuing thread)
and its commits (the commit thread). Here the job's real scheduling runs (``LocalJob``: the pipeline, the
network's batches, the group writer into an in-memory store) with a decoding stage and a network that each
cost a fixed time a batch and sleep without holding the GIL, as a GPU stage leaves the host free. The job's
rate is divided by the rate of the slowest stage alone: fully serialised stages of equal cost give 0.5x,
perfectly overlapped ones 1.0x. The last line ends in ``overlap X.XXx``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from featx._machine import cpu_model  # noqa: E402
from featx.cache.store import MemoryNamespace  # noqa: E402
from featx.engines.base import RunOptions  # noqa: E402
from featx.engines.local.stages import Decoded, LocalJob, Work  # noqa: E402
from featx.models.pending import PendingVectors  # noqa: E402
from featx.models.preprocessing import Preprocessing  # noqa: E402


class StandInNetwork:
    """A network that takes ``seconds`` a batch, asleep (a GPU forward leaves the host free)."""

    device = torch.device("cpu")
    preprocessing = Preprocessing()

    def __init__(self, seconds: float):
        self.seconds = seconds

    def prepare(self, n_images: int, batch_size: int) -> None:
        pass

    def submit(self, batch: torch.Tensor) -> PendingVectors:
        time.sleep(self.seconds)
        return PendingVectors(torch.zeros(len(batch), 8))


class StandInJob(LocalJob):
    """The local job with a decoding stage that takes ``seconds`` a batch, asleep (nvJPEG's share)."""

    def __init__(self, network: StandInNetwork, options: RunOptions, seconds: float):
        super().__init__(network, MemoryNamespace({}), options)
        self.seconds = seconds

    def decode(self, work: Work) -> Decoded:
        time.sleep(self.seconds)
        return Decoded(work.keys, work.pixels, None, work.expected)


def batches(n: int, size: int) -> list[Work]:
    pixels = torch.zeros(size, 3, 1, 1, dtype=torch.uint8)
    return [Work([f"{b}-{i}" for i in range(size)], pixels, [], n * size) for b in range(n)]


def job_rate(n: int, size: int, decode_s: float, forward_s: float) -> float:
    """Images per second through the job's scheduling."""
    work = batches(n, size)
    start = time.perf_counter()
    with StandInJob(StandInNetwork(forward_s), RunOptions(batch_size=size), decode_s) as job:
        for item in work:
            job.put(item)
        job.finish()
    assert job.batches.computed == n * size
    return n * size / (time.perf_counter() - start)


def stage_rate(n: int, size: int, seconds: float) -> float:
    """Images per second of one stand-in stage alone (what its sleeps really take here)."""
    start = time.perf_counter()
    for _ in range(n):
        time.sleep(seconds)
    return n * size / (time.perf_counter() - start)


def measure(n: int, size: int, decode_ms: float, forward_ms: float) -> dict[str, float]:
    decode = stage_rate(n, size, decode_ms / 1000)
    forward = stage_rate(n, size, forward_ms / 1000)
    job = job_rate(n, size, decode_ms / 1000, forward_ms / 1000)
    return {"decode": decode, "forward": forward, "job": job, "overlap": job / min(decode, forward)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--decode-ms", type=float, default=8.0)
    parser.add_argument("--forward-ms", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = [
        measure(args.batches, args.batch_size, args.decode_ms, args.forward_ms) for _ in range(args.repeats)
    ]
    best = max(runs, key=lambda run: run["overlap"])
    print(
        f"{cpu_model()}: decode {best['decode']:.0f} images/s alone, forward {best['forward']:.0f} "
        f"images/s alone, job {best['job']:.0f} images/s (median overlap "
        f"{np.median([r['overlap'] for r in runs]):.2f}x of {args.repeats}); overlap {best['overlap']:.2f}x"
    )


if __name__ == "__main__":
    main()
