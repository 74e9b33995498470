"""decoding="device": JPEGs decoded by torchvision's decoder in the network's process, on its device, with
the CPU path for everything else. On a GPU that is nvJPEG (tests/test_gpu.py); here the same code runs
with device="cpu", which is how its mechanics and its fidelity are checked without one."""

import io

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_CLI, cmyk_jpeg, encode, photo, real_jpeg, rotated_jpeg, write_shard
from PIL import Image

from featx import FeatureCache, PretrainedFeatures, build_network, extract_features, load_features
from featx.engines import RunOptions
from featx.engines.keyed import decode_jpegs
from featx.errors import ImageError, ParameterError
from featx.inputs.jpeg import device_decodable
from featx.inputs.manifests import load_job_source
from featx.job import run_extract_job
from featx.models import decoding
from featx.models.preprocessing import Preprocessing
from featx.models.tuning import min_cosine


def test_only_jpegs_the_device_decodes_like_the_cpu_go_there():
    limit, resize = 10**8, 256
    assert device_decodable(real_jpeg(0), limit, resize)
    assert device_decodable(real_jpeg(1, progressive=True), limit, resize)
    grey = io.BytesIO()
    Image.open(io.BytesIO(real_jpeg(2))).convert("L").save(grey, "JPEG")
    assert device_decodable(grey.getvalue(), limit, resize)
    refused = {
        "smaller than the resize": real_jpeg(0, size=(300, 255)),  # enlarging would enlarge the differences
        "cmyk": cmyk_jpeg(),
        "exif-rotated": rotated_jpeg(),  # nvJPEG would not turn it upright
        "truncated": real_jpeg(0)[:-500],
        "png": encode(photo(0)),
        "empty": b"",
        "not bytes": np.zeros((4, 4, 3), np.uint8),
    }
    for name, content in refused.items():
        assert not device_decodable(content, limit, resize), name
    assert not device_decodable(real_jpeg(0), 500 * 375 - 1, resize)  # over max_pixels: the CPU path says so


def test_a_batch_of_jpegs_decodes_to_the_pixels_of_the_cpu_path():
    preprocessing = Preprocessing(decoding="device")
    jpegs = [real_jpeg(n) for n in range(4)] + [real_jpeg(1, size=(375, 500))]
    outcome = decode_jpegs(
        [(n, f"photo {n}", f"key{n}", j) for n, j in enumerate(jpegs)],
        preprocessing,
        torch.device("cpu"),
        10**8,
    )
    assert outcome.keys == [f"key{n}" for n in range(5)] and not outcome.errors
    on_cpu = torch.stack([Preprocessing(decoding="full").decode(j) for j in jpegs])
    assert outcome.pixels.shape == on_cpu.shape and outcome.pixels.dtype == torch.uint8
    difference = (outcome.pixels.int() - on_cpu.int()).abs()
    assert difference.float().mean() < 1.0 and difference.max() <= 16  # libjpeg's IDCT vs PIL's: rounding


def test_a_jpeg_the_device_cannot_decode_fails_as_on_the_cpu_and_alone():
    broken = bytearray(real_jpeg(2))
    broken[400:2400] = bytes(2000)  # scan data zeroed: the header still parses
    jpegs = [real_jpeg(0), bytes(broken), real_jpeg(1)]
    outcome = decode_jpegs(
        [(n, f"photo {n}", f"key{n}", j) for n, j in enumerate(jpegs)],
        Preprocessing(decoding="device"),
        torch.device("cpu"),
        10**8,
    )
    with pytest.raises(ImageError) as on_cpu:
        Preprocessing(decoding="full").decode(bytes(broken), 1, 10**8, source="photo 1")
    assert [(e.index, e.source, e.kind) for e in outcome.errors] == [(1, "photo 1", on_cpu.value.kind)]
    assert outcome.keys == ["key0", "key2"]
    assert len(outcome.pixels) == len(outcome.keys)


def test_device_decoding_gives_the_vectors_of_the_cpu_path_and_the_same_failures(jpeg_folder, tmp_path):
    paths = sorted(str(p) for p in jpeg_folder.iterdir()) + [str(tmp_path / "missing.jpg")]
    common = dict(
        backbone="tiny", weights=None, precision="fp32", num_workers=2, on_error="nan", batch_size=4
    )
    full = extract_features(paths, decoding="full", **common)
    device = extract_features(paths, decoding="device", cache_dir=tmp_path / "cache", **common)
    failed = np.isnan(full).any(1)
    assert list(np.isnan(device).any(1)) == list(failed) and failed.sum() == 1  # the missing file
    assert min_cosine(device[~failed], full[~failed]) >= 0.999
    (namespace,) = FeatureCache(tmp_path / "cache").namespaces()
    assert namespace.fingerprint["preprocessing"]["decoding"] == "device"  # never mixed with the CPU's
    again = extract_features(paths, decoding="device", cache_dir=tmp_path / "cache", **common)
    np.testing.assert_array_equal(again[~failed], device[~failed])


def test_shards_decode_on_the_device_too(tmp_path):
    samples = [(f"s{n}", {"jpg": real_jpeg(n), "cls": b"1"}) for n in range(5)]
    samples.append(("bad", {"jpg": real_jpeg(0)[:-300], "cls": b"0"}))  # truncated: the CPU path names it
    write_shard(tmp_path / "shard-000.tar", samples)
    vectors, kinds = {}, {}
    for mode in ("full", "device"):
        network = build_network("tiny", weights=None, precision="fp32", decoding=mode)
        summary = run_extract_job(
            load_job_source(str(tmp_path / "shard-000.tar")),
            network,
            FeatureCache(tmp_path / "cache").namespace(network.fingerprint),
            RunOptions(batch_size=4, num_workers=1, progress=False),
            out=tmp_path / f"{mode}.parquet",
        )
        kinds[mode] = [e.kind for e in summary.errors]
        vectors[mode] = load_features(tmp_path / f"{mode}.parquet")[0]
    assert kinds["device"] == kinds["full"] and len(kinds["full"]) == 1
    assert min_cosine(vectors["device"], vectors["full"]) >= 0.999


def test_auto_is_reduced_off_a_gpu_without_measuring_and_the_measurement_picks_the_faster_path():
    choice = decoding.choose_decoding("auto", torch.device("cpu"), Preprocessing())
    assert choice["decoding"] == "reduced"
    assert build_network("tiny", weights=None, precision="fp32").preprocessing.decoding == "reduced"
    record = decoding.measure(torch.device("cpu"), Preprocessing(), workers=1)
    rates = record["trials"]
    assert rates["device"] > 0 and rates["cpu"] > 0
    assert record["decoding"] == ("device" if rates["device"] > rates["cpu"] else "reduced")


def test_dali_decoding_says_in_one_line_what_it_lacks_and_auto_times_it_only_where_it_runs(monkeypatch):
    from featx.inputs import dali

    monkeypatch.setattr(dali.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        ParameterError, match=r"decoding='dali' needs NVIDIA DALI: pip install 'featx\[dali\]'"
    ):
        decoding.choose_decoding("dali", torch.device("cuda"), Preprocessing())
    assert not dali.available()
    monkeypatch.setattr(dali.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(ParameterError, match="runs on a CUDA GPU only"):
        decoding.choose_decoding("dali", torch.device("cpu"), Preprocessing())
    record = decoding.measure(torch.device("cpu"), Preprocessing(), workers=1)
    assert "dali" not in record["trials"]  # a candidate only on a GPU with DALI installed
    assert "decoding" in Preprocessing(decoding="dali").as_dict()  # its own fingerprint


def test_the_ray_engine_refuses_device_decoding_by_name():
    from featx.engines.ray.engine import RayEngine
    from featx.models.spec import NetworkSpec

    with pytest.raises(ParameterError, match="decoding='device' runs with the local engine only"):
        RayEngine().network(NetworkSpec("tiny", weights=None, decoding="device"))


def _with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG whose frame header claims another size (a decompression bomb a few kB long)."""
    start = jpeg.index(b"\xff\xc0") + 5  # SOF0: length (2), precision (1), then height and width
    return jpeg[:start] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[start + 4 :]


def test_hostile_files_fail_alike_whichever_decoder(messy_folder, tmp_path):
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "bomb.jpg").write_bytes(_with_declared_size(real_jpeg(0), 60000, 60000))
    (odd / "garbage-after-end.jpg").write_bytes(real_jpeg(1) + b"trailing bytes a camera left")
    corrupt = bytearray(real_jpeg(2))
    corrupt[600:1600] = bytes(range(256)) * 3 + bytes(232)
    (odd / "corrupt-scan.jpg").write_bytes(bytes(corrupt))
    manifest = pd.read_csv(messy_folder)
    paths = [str(messy_folder.parent / p) for p in manifest["path"]] + sorted(str(p) for p in odd.iterdir())
    outcomes = {}
    for mode in ("full", "device"):
        features = PretrainedFeatures("tiny", weights=None, precision="fp32", decoding=mode, on_error="nan")
        with pytest.warns(UserWarning, match="images failed and are NaN rows"):
            vectors = features.fit_transform(paths)
        outcomes[mode] = vectors, {e.index: e.kind for e in features.errors_}
    (full, full_errors), (device, device_errors) = outcomes["full"], outcomes["device"]
    assert device_errors == full_errors
    assert full_errors[paths.index(str(odd / "bomb.jpg"))] == "decompression_bomb"
    good = ~np.isnan(full).any(1)
    assert min_cosine(device[good], full[good]) >= 0.999


def test_the_command_line_takes_each_decoding_and_says_which_ran(jpeg_folder, tmp_path):
    from test_cache import featx_cli

    common = [*TINY_CLI, "--device", "cpu"]
    said = {}
    for mode in ("auto", "device"):
        done = featx_cli("extract", jpeg_folder, "--cache", tmp_path / mode, "--decoding", mode, *common)
        assert done.returncode == 0, done.stderr
        said[mode] = done.stderr
    assert "decoding reduced;" in said["auto"] and "decoding device;" in said["device"]  # auto, off a GPU
    refused = featx_cli("extract", jpeg_folder, "--cache", tmp_path / "x", "--decoding", "gpu", *common)
    assert refused.returncode == 2 and "--decoding" in refused.stderr
