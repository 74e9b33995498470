"""How many decoding workers a local job starts, how, and at what priority: from the job's size, the
device, the cores, what this process holds, and how busy the machine is at the time."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from multiprocessing.context import BaseContext

import torch

from featx.errors import FeatxError

_CPU = torch.device("cpu")


def default_num_workers(n_images: int, batch_size: int, device: torch.device = _CPU) -> int:
    """No worker processes for a batch or two (start-up would dominate). With a GPU running the network,
    decode on every spare core; on a CPU, decoders share the cores with the network: half, up to 4."""
    if n_images <= 2 * batch_size:
        return 0
    cores = os.cpu_count() or 2
    return max(1, cores - 1) if device.type == "cuda" else max(1, min(4, cores // 2))


def worker_context(preload: list[str]) -> BaseContext | None:
    """A ``forkserver`` context where this process is connected to Ray and would otherwise fork; else
    None (the platform's default, fork on Linux, which starts workers fastest).

    gRPC does not support a fork while its threads run (its fork_support.md; Ray issue #59661), and a
    Ray driver's always run: with Ray 2.60, decoders forked from the driver just before a Ray job can
    make the raylet abort (``Check failed: binary.size() == T::Size()``, docs/contributing.md). The
    fork server is a fresh process with the ``preload`` modules imported once; the cost is each worker's
    start (it imports the main module, as under spawn).
    """
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    if method != "fork":
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload)
    return context


def explain_worker_exit(loader_context: BaseContext | None, error: RuntimeError) -> FeatxError | None:
    """What to do when a decoder started from the fork server died at once: it imported the script's main
    module again, and an unguarded job there starts processes while the worker is still starting."""
    if loader_context is None or loader_context.get_start_method() != "forkserver":
        return None
    if "exited unexpectedly" not in str(error):
        return None
    return FeatxError(
        f"{error}: in a process connected to Ray, featx starts decoding workers from a fork server (a forked "
        "one would inherit Ray's connections), and each imports your script's main module again; put the "
        'job under `if __name__ == "__main__":`, or pass num_workers=0'
    )


#: How long one measurement of the neighbours' load stands: a grid search's many short jobs measure once.
BUSY_SHARE_TTL_S = 30.0
_busy_share: tuple[float, float] | None = None  # (when measured, share)


def decoders_should_yield(device: torch.device) -> bool:
    """Niced decoders help only where they compete with the network's own threads and nothing else: with
    a GPU they have the CPU to themselves, and beside a busy neighbour a niced decoder starves and the
    network waits on it. Measured, not assumed: the share of CPU time other processes use, now (or in
    the last ``BUSY_SHARE_TTL_S`` seconds: the measurement itself takes 0.2 s)."""
    global _busy_share
    if device.type != "cpu":
        return False
    if _busy_share is None or time.monotonic() - _busy_share[0] > BUSY_SHARE_TTL_S:
        _busy_share = (time.monotonic(), busy_share_of_others())
    return _busy_share[1] < 0.25


def busy_share_of_others(window_s: float = 0.2) -> float:
    """The fraction of all cores busy over ``window_s`` while this process sleeps (Linux /proc/stat;
    elsewhere 0, i.e. assume an idle machine)."""

    def ticks() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    before = ticks()
    if before is None:
        return 0.0
    time.sleep(window_s)
    after = ticks()
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0


def yield_to_the_network(worker_id: int) -> None:
    """On a machine without spare cores a decoder competing at equal priority slows the network's thread
    pool more than its decoding gains (see benchmarks/speed.py)."""
    os.nice(10)
