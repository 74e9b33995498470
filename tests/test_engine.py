"""The engine: order, batch invariance, frozen networks, duplicates, devices and precision."""

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import photo
from PIL import Image

from featx import build_network, extract_features
from featx.engines import RunOptions
from featx.extract import extract
from featx.models.network import COMPILE_MIN_IMAGES


def test_rows_follow_input_order_and_do_not_depend_on_batch_size_or_neighbours():
    images = [photo(i) for i in range(7)]
    reference = extract_features(images, "tiny", weights=None, batch_size=7)
    for batch_size in (1, 3):
        shuffled = extract_features(images[::-1], "tiny", weights=None, batch_size=batch_size)
        # the batch's size may change the last bits of CPU kernels: tolerance 1e-3 relative under bf16
        np.testing.assert_allclose(shuffled[::-1], reference, rtol=1e-3, atol=1e-4)


def test_resnet18_vectors_are_batch_invariant_in_fp32_within_1e_5():
    images = [photo(i) for i in range(4)]
    one = extract_features(images, "resnet18", weights=None, precision="fp32", batch_size=1)
    four = extract_features(images, "resnet18", weights=None, precision="fp32", batch_size=4)
    np.testing.assert_allclose(one, four, rtol=1e-5, atol=1e-5)


def test_the_network_is_frozen_in_eval_mode_without_gradients():
    network = build_network("resnet18", weights=None, device="cpu")
    assert not any(module.training for module in network.pipelines.module.modules())
    assert not any(p.requires_grad for p in network.pipelines.module.parameters())
    before = {k: v.clone() for k, v in network.pipelines.module.state_dict().items()}
    network(torch.randint(0, 256, (4, 3, 224, 224), dtype=torch.uint8))
    after = network.pipelines.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running stats untouched


def test_random_init_is_the_same_network_every_time():
    a = build_network("tiny", weights=None).pipelines.module.state_dict()
    b = build_network("tiny", weights=None).pipelines.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_duplicate_images_are_computed_once():
    network = build_network("tiny", weights=None)
    result = extract([photo(0), photo(1), photo(0), photo(0)], network)
    assert result.n_computed == 2
    np.testing.assert_array_equal(result.features[0], result.features[2])


def test_the_engine_keeps_64_bytes_a_key_and_one_failure_of_a_content_fails_each_input_holding_it():
    from featx import engines
    from featx.cache import MemoryNamespace
    from featx.engines.base import RunOptions
    from featx.inputs.images import content_key

    network = build_network("tiny", weights=None)
    text = b"not an image"
    images = [photo(0), text, photo(1), "/nowhere/missing.png", text]
    filled = engines.get("local").fill(
        images, network, MemoryNamespace(network.fingerprint), RunOptions(num_workers=0)
    )
    assert filled.keys.dtype == np.dtype("S64") and filled.keys.nbytes == 64 * len(images)
    assert filled.keys[3] == b"" and filled.key_strings([0, 1]) == [content_key(images[0]), content_key(text)]
    assert [(e.index, e.kind) for e in filled.errors] == [
        (1, "not_an_image"),
        (3, "missing"),
        (4, "not_an_image"),
    ]
    assert filled.good().tolist() == [0, 2]


def test_output_is_float32_one_row_per_image():
    X = extract_features([photo(0), photo(1)], "tiny", weights=None)
    assert X.dtype == np.float32 and X.shape == (2, 64)


def test_the_engine_scales_uint8_batches_as_the_per_image_float_transform_does():
    network = build_network("tiny", weights=None, precision="fp32")
    pictures = [Image.fromarray(photo(seed, size=(50 + seed, 40))) for seed in range(3)]
    uint8 = torch.stack([network.preprocessing.geometry()(p) for p in pictures])
    assert uint8.dtype == torch.uint8
    with torch.inference_mode():
        expected = network.pipelines.module(
            torch.stack([network.preprocessing.transform()(p) for p in pictures])
        )
    np.testing.assert_allclose(network(uint8), expected["features"].flatten(1).numpy(), rtol=1e-5, atol=1e-6)


def test_batchnorm_is_folded_into_convolutions_without_changing_the_features():
    network = build_network("resnet18", weights=None, precision="fp32")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.pipelines.module.modules())
    torch.manual_seed(0)  # featx's random init: the same seed, the same network
    unfused = torchvision.models.resnet18().eval()
    unfused.fc = torch.nn.Identity()
    batch = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    scaled = torchvision.transforms.v2.Normalize(network.preprocessing.mean, network.preprocessing.std)(
        batch / 255
    )
    with torch.inference_mode():
        expected = unfused(scaled).numpy()
    np.testing.assert_allclose(network(batch), expected, rtol=1e-4, atol=1e-5)


def test_compiled_network_pads_small_batches_and_matches_the_eager_one():
    images = [photo(seed) for seed in range(5)]
    eager = extract_features(images, "tiny", weights=None, precision="fp32", batch_size=4, compile=False)
    network = build_network("tiny", weights=None, precision="fp32", compile=True)
    compiled = extract(images, network, options=RunOptions(batch_size=4))  # batches of 4 and 1 (padded to 4)
    assert network._compiled is not None and network._compiled[1] == 4
    np.testing.assert_allclose(compiled.features, eager, rtol=1e-4, atol=1e-5)


def test_compile_auto_waits_for_a_big_job_and_a_failed_compile_falls_back_with_a_warning(monkeypatch):
    network = build_network("tiny", weights=None, compile="auto")
    network.prepare(n_images=COMPILE_MIN_IMAGES - 1, batch_size=8)
    assert network._compiled is None

    def broken(*args, **kwargs):
        raise RuntimeError("no C compiler")

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: broken)
    with pytest.warns(UserWarning, match="torch.compile failed for tiny .*no C compiler.*running eagerly"):
        network.prepare(n_images=COMPILE_MIN_IMAGES, batch_size=8)
    assert network._compiled is None and network.compile is False
    assert extract([photo(0)], network).features.shape == (1, 64)


def test_decoders_are_sized_to_the_device_and_do_not_yield_beside_a_busy_neighbour(monkeypatch):
    import subprocess
    import sys

    from featx.engines.local import workers
    from featx.engines.local.workers import decoders_should_yield, default_num_workers

    monkeypatch.setattr(workers, "_busy_share", None)  # measure now, not what an earlier test measured

    cores = os.cpu_count() or 2
    assert default_num_workers(10_000, 64, torch.device("cuda")) == max(
        1, cores - 1
    )  # the GPU runs the network
    assert default_num_workers(10_000, 64, torch.device("cpu")) == max(1, min(4, cores // 2))
    assert default_num_workers(100, 64, torch.device("cpu")) == 0  # two batches or fewer: no worker start-up
    assert not decoders_should_yield(torch.device("cuda"))
    assert workers.worker_context([]) is None  # not connected to Ray: the platform's default, fork on Linux
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.5)
        assert not decoders_should_yield(torch.device("cpu"))  # niced decoders would starve beside them
        measured = workers._busy_share
        decoders_should_yield(torch.device("cpu"))
        assert workers._busy_share is measured  # one 0.2 s measurement stands for BUSY_SHARE_TTL_S
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def test_each_image_is_read_once_in_the_workers_and_decoded_only_when_the_cache_lacks_it(
    tmp_path, monkeypatch
):
    from featx import PretrainedFeatures
    from featx.cache import stat_memo
    from featx.engines.local import seen
    from featx.inputs import images

    folder = tmp_path / "images"
    folder.mkdir()
    paths = [str(folder / f"{i:02d}.bmp") for i in range(12)]  # BMP: every file the same size
    for i, path in enumerate(paths):
        Image.fromarray(photo(i)).save(path)
    log = tmp_path / "calls.log"

    def logged(what, original, name_of):
        def wrapper(*args, **kwargs):
            with open(log, "a") as handle:  # one short appended line: atomic across worker processes
                handle.write(f"{os.getpid()} {what} {name_of(args)}\n")
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(images, "_open_file", logged("read", images._open_file, lambda a: os.fspath(a[0])))
    monkeypatch.setattr(images, "_decode", logged("decode", images._decode, lambda a: a[2]))

    def run():
        log.write_text("")
        PretrainedFeatures(
            "tiny", weights=None, cache_dir=tmp_path / "cache", batch_size=4, num_workers=2
        ).fit_transform(paths)
        calls = [line.split(" ", 2) for line in log.read_text().splitlines()]
        assert all(int(pid) != os.getpid() for pid, _, _ in calls)  # the main process reads no image
        return (
            [name for _, what, name in calls if what == "read"],
            sorted(name for _, what, name in calls if what == "decode"),
        )

    reads, decodes = run()  # cold
    assert sorted(reads) == paths and decodes == paths
    reads, decodes = run()  # warm, same process: unchanged files are keyed by their stat, not read
    assert reads == [] and decodes == []
    seen._SEEN.clear()  # warm, as a new process: keyed through the stat memo kept beside the cache
    reads, decodes = run()
    assert reads == [] and decodes == []
    shutil.rmtree(tmp_path / "cache" / stat_memo.FOLDER)
    seen._SEEN.clear()  # a new process without the memo: read (to key) once, decoded never
    reads, decodes = run()
    assert sorted(reads) == paths and decodes == []
    Image.fromarray(photo(99)).save(paths[5])  # a file changes under the same name
    before = os.stat(paths[6])
    Path(paths[6]).write_bytes(Path(paths[7]).read_bytes())  # another content of the same size, and the
    os.utime(paths[6], ns=(before.st_atime_ns, before.st_mtime_ns))  # old mtime put back: only ctime moves
    assert os.stat(paths[6]).st_size == before.st_size
    seen._SEEN.clear()  # a new process, whose memo entries of both files are stale
    reads, decodes = run()
    assert sorted(reads) == [paths[5], paths[6]] and decodes == [paths[5]]  # paths[6] now holds 07's content
    Image.fromarray(photo(98)).save(paths[5])  # and in the same process
    reads, decodes = run()
    assert reads == [paths[5]] and decodes == [paths[5]]


class _RowSums:
    """A stand-in network whose vector of an image is its pixel sum: rows are checkable after batching."""

    device = torch.device("cpu")

    def prepare(self, n_images, batch_size):
        pass

    def submit(self, pixels):
        from featx.models.pending import PendingVectors

        return PendingVectors(pixels.flatten(1).sum(1, keepdim=True).double().float())


def test_batches_cut_uneven_worker_chunks_into_full_batches_each_content_once_and_rows_stay_with_their_keys():
    from featx.cache.store import MemoryNamespace
    from featx.engines.local.batches import Batches

    store = MemoryNamespace({})
    chunks = [
        (["a", "b", "c"], [1, 2, 3]),
        (["d", "a", "e", "f", "g"], [4, 1, 5, 6, 7]),
        (["g", "h"], [7, 8]),
    ]
    computed = []
    with Batches(_RowSums(), store, batch_size=4) as batches:
        for keys, values in chunks:
            batches.add(keys, torch.tensor(values, dtype=torch.uint8).reshape(-1, 1, 1, 1))
            batches.commit_full(expected=8)
            computed.append(batches.computed)
        batches.commit_all()
    assert computed == [0, 4, 8]  # 3 distinct, then 7 (a, b, c, d | e, f, g), then 8
    assert store.missing(list("abcdefgh")) == []
    vectors, _ = store.read(list("abcdefgh"))
    np.testing.assert_array_equal(vectors[:, 0], [1, 2, 3, 4, 5, 6, 7, 8])


class _Recording:
    """An in-memory store that records each commit's keys, optionally slow, failing the commit that holds
    ``fail_on``."""

    def __init__(self, seconds=0.0, fail_on=None):
        from featx.cache.store import MemoryNamespace

        self.memory, self.seconds, self.fail_on, self.commits = MemoryNamespace({}), seconds, fail_on, []

    def write(self, keys, vectors):
        time.sleep(self.seconds)
        if self.fail_on in keys:
            raise OSError(28, "No space left on device")
        self.memory.write(keys, vectors)
        self.commits.append(list(keys))


def _run_batches(store, n_batches, batch_size=2):
    from featx.engines.local.batches import Batches

    keys = [f"k{i}" for i in range(n_batches * batch_size)]
    with Batches(_RowSums(), store, batch_size) as batches:
        for start in range(0, len(keys), batch_size):
            values = torch.arange(start, start + batch_size, dtype=torch.uint8).reshape(-1, 1, 1, 1)
            batches.add(keys[start : start + batch_size], values)
            batches.commit_full(expected=len(keys))
        batches.commit_all()
    return keys


def test_batches_that_wait_for_a_slow_disk_are_committed_together_rows_intact():
    store = _Recording(seconds=0.2)
    keys = _run_batches(store, n_batches=10)
    assert len(store.commits) <= 3  # the first batch alone, then the nine that queued behind it
    assert [key for commit in store.commits for key in commit] == keys
    vectors, _ = store.memory.read(keys)
    np.testing.assert_array_equal(vectors[:, 0], np.arange(20))


def test_a_commit_failing_on_the_writer_thread_raises_in_the_job_and_the_commits_before_it_stay():
    store = _Recording(seconds=0.01, fail_on="k10")
    with pytest.raises(OSError, match="No space left"):
        _run_batches(store, n_batches=20)
    landed = [key for commit in store.commits for key in commit]  # nothing is written after the failure
    assert landed == [f"k{i}" for i in range(len(landed))] and "k10" not in landed
    assert store.memory.missing(landed) == []


def test_decoding_workers_hand_over_a_batch_as_a_few_buffers_in_sample_order():
    from featx.engines.local.datasets import CACHED, DECODED, FAILED, JPEG, stack_decoded
    from featx.errors import ImageError

    failed = ImageError(2, "/x.png", "truncated", "ends early")
    samples = [
        (0, "k0", torch.full((3, 2, 2), 10, dtype=torch.uint8), None),
        (1, "k1", None, None),
        (2, None, failed, None),
        (3, "k3", torch.full((3, 2, 2), 30, dtype=torch.uint8), ("sig",)),
        (4, "k4", b"\xff\xd8jpeg", None),
        (5, "k5", b"\xff\xd8other", None),
    ]
    packed = stack_decoded(samples)
    assert packed.indices.tolist() == [0, 1, 2, 3, 4, 5]
    assert packed.keys.tolist() == [b"k0", b"k1", b"", b"k3", b"k4", b"k5"]
    assert packed.codes.tolist() == [DECODED, CACHED, FAILED, DECODED, JPEG, JPEG]
    assert packed.errors == {2: failed} and packed.signatures == {3: ("sig",)}
    assert packed.pixels.shape == (2, 3, 2, 2) and packed.pixels[:, 0, 0, 0].tolist() == [10, 30]
    assert [bytes(view.numpy()) for view in packed.jpeg_views()] == [b"\xff\xd8jpeg", b"\xff\xd8other"]
    only_cached = stack_decoded([(1, "k1", None, None)])
    assert only_cached.pixels is None and only_cached.jpegs is None and only_cached.jpeg_views() == []


def test_shard_decoders_hand_over_a_batch_s_pixels_as_one_tensor_and_entries_without_them():
    from featx.engines.local.datasets import CACHED, DECODED, stack_streamed
    from featx.engines.streaming import Streamed

    def entry(position, pixels=None, key="k"):
        return Streamed(
            0, position, f"tar://{position}.jpg::s.tar", str(position), None, f"{key}{position}", pixels
        )

    sevens, ones = torch.full((3, 2, 2), 7, dtype=torch.uint8), torch.ones(3, 2, 2, dtype=torch.uint8)
    entries = [entry(0, sevens), entry(1), entry(2, ones)]
    stripped, packed = stack_streamed(entries)
    assert packed.codes.tolist() == [DECODED, CACHED, DECODED] and all(e.pixels is None for e in stripped)
    assert [e.key for e in stripped] == ["k0", "k1", "k2"] and packed.pixels[:, 0, 0, 0].tolist() == [7, 1]
    assert stack_streamed([entry(3)])[1].pixels is None
