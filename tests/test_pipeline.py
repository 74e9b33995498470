"""The job's pipeline: decoding and issuing on their own threads, in order, bounded, overlapped, with a
stage's error raised in the job's thread. Stand-in stages here; the local job runs the same scheduler
(tests/test_engine.py), and benchmarks/gpu_overlap.py measures it."""

import sys
import threading
import time

import pytest
from conftest import REPO

from featx.engines.pipeline import Pipeline


def test_items_go_through_both_stages_in_the_order_they_were_put():
    issued = []
    with Pipeline(lambda item: item * 10, issued.append) as pipeline:
        for item in range(50):
            pipeline.put(item)
        pipeline.drain()
    assert issued == [item * 10 for item in range(50)]


def test_decoding_and_issuing_overlap_the_job_runs_near_its_slowest_stage():
    def slow(item):
        time.sleep(0.02)  # sleeps without the GIL, as a GPU stage leaves the host free
        return item

    def run() -> float:
        start = time.perf_counter()
        with Pipeline(slow, slow) as pipeline:
            for item in range(20):
                pipeline.put(item)
            pipeline.drain()
        return time.perf_counter() - start

    # serialised: 0.8 s; overlapped: about 0.42 s (best of three: the machine may be busy)
    assert min(run() for _ in range(3)) < 0.6


def test_put_waits_only_when_the_in_flight_bound_is_full():
    release = threading.Event()
    pipeline = Pipeline(lambda item: release.wait() and item, lambda item: None, depth=2)
    put = []

    def feed():
        for item in range(10):
            pipeline.put(item)
            put.append(item)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    deadline = time.monotonic() + 10
    while len(put) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert len(put) == 3  # one being decoded and two waiting for it; the fourth waits
    release.set()
    feeder.join(5)
    pipeline.drain()
    pipeline.close()
    assert len(put) == 10


def test_a_stage_s_error_is_raised_in_the_job_s_thread_and_nothing_after_it_is_issued():
    issued = []

    def decode(item):
        if item == 3:
            raise OSError("nvJPEG ran out of memory")
        return item

    with pytest.raises(OSError, match="out of memory"), Pipeline(decode, issued.append) as pipeline:
        for item in range(10):
            pipeline.put(item)
        pipeline.drain()
    assert issued == [0, 1, 2]


def test_after_stop_what_is_decoded_is_issued_and_what_is_not_is_dropped():
    issued = []
    holder = {}

    def decode(item):
        if item == 2:
            holder["pipeline"].stop()  # fail_fast: this batch is kept, nothing after it
        return item

    with Pipeline(decode, issued.append) as pipeline:
        holder["pipeline"] = pipeline
        for item in range(10):
            pipeline.put(item)
        pipeline.drain()
    assert issued == [0, 1, 2] and pipeline.stopped


def test_gpu_overlap_benchmark_runs_the_job_s_scheduling_with_stand_ins_and_overlaps():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_overlap

    measured = gpu_overlap.measure(n=40, size=16, decode_ms=10, forward_ms=10)
    assert measured["overlap"] > 0.65  # fully serialised stages: 0.5


def _jpeg_files(tmp_path, n):
    from conftest import real_jpeg

    paths = [tmp_path / f"{i}.jpg" for i in range(n)]
    for i, path in enumerate(paths):
        path.write_bytes(real_jpeg(i))
    return [str(p) for p in paths]


def test_fail_fast_on_a_device_failure_stores_the_batches_before_it_and_computes_none_after(
    tmp_path, monkeypatch
):
    from featx.cache.store import MemoryNamespace
    from featx.engines.base import RunOptions
    from featx.engines.local import engine, stages
    from featx.errors import ImageError
    from featx.models.build import build_network

    paths = _jpeg_files(tmp_path, 12)
    real = stages.decode_uncropped

    def failing_on_the_fifth(jpegs, *args):  # the device and then the CPU path fail on input 5
        decoded = real([j for j in jpegs if j[0] != 5], *args)
        if any(j[0] == 5 for j in jpegs):
            decoded.cropped.errors.append(ImageError(5, paths[5], "truncated", "ends early"))
        return decoded

    monkeypatch.setattr(stages, "decode_uncropped", failing_on_the_fifth)
    network = build_network("tiny", weights=None, precision="fp32", decoding="device")
    store = MemoryNamespace({})
    options = RunOptions(batch_size=2, num_workers=0, fail_fast=True)
    with pytest.raises(ImageError, match="5.jpg"):
        engine.run(paths, network, store, options)
    stored = len(store.known())
    assert stored == 5  # inputs 0-3, and 4 beside the failure in its batch; nothing after it


def test_the_network_runs_its_own_batch_size_whatever_the_decoders_batch(tmp_path):
    from featx.cache.store import MemoryNamespace
    from featx.engines.base import RunOptions
    from featx.engines.local import engine
    from featx.models.build import build_network

    network = build_network("tiny", weights=None, precision="fp32")
    sizes = []
    submit = network.submit
    network.submit = lambda batch: sizes.append(len(batch)) or submit(batch)
    paths = _jpeg_files(tmp_path, 20)
    filled = engine.run(
        paths, network, MemoryNamespace({}), RunOptions(batch_size=4, num_workers=0, forward_batch=8)
    )
    assert sizes == [8, 8, 4] and filled.n_computed == 20 and not filled.errors
