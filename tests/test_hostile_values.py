"""Hostile values and damage that used to end in a traceback or a wrong answer: each is now one line
naming the value and what to do, or the damage is repaired by recomputing."""

import contextlib
import io
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_same_vectors, photo
from test_cache import featx_cli
from test_hostile_cli import one_line_error

from featx import (
    FeatureCache,
    ImageError,
    ParameterError,
    PretrainedFeatures,
    extract_features,
    load_features,
)

TINY = ["--backbone", "tiny_backbone:TINY", "--quiet"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line(image_folder, tmp_path):
    result = featx_cli(
        "extract", image_folder, *TINY, "--weights", "none", "--cache", tmp_path / "c", "--device", "cuda"
    )
    one_line_error(result, "device='cuda'", "no CUDA GPU", "'cpu'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without these devices")
@pytest.mark.parametrize(
    "device, words",
    [
        ("mps", ["device='mps' is not usable on this machine", "'MPS' backend)"]),
        ("xpu", ["device='xpu' is not usable on this machine", "XPU"]),
        ("meta", ["holds no data"]),
        ("cuda:1", ["device='cuda:1'", "no CUDA GPU"]),
        ("tpu", ["not a torch device", "'cuda:N'"]),
    ],
)
def test_a_device_this_machine_or_torch_build_lacks_is_one_short_line(image_folder, tmp_path, device, words):
    result = featx_cli(
        "extract", image_folder, *TINY, "--weights", "none", "--cache", tmp_path / "c", "--device", device
    )
    line = one_line_error(result, *words, "'cpu'")
    assert len(line) < 300, line  # torch's message names every backend it has: not that


def test_more_decoding_workers_than_batches_start_only_one_per_batch(image_folder, tmp_path, monkeypatch):
    from torch.utils.data import DataLoader

    from featx.engines.local import engine as local_engine

    started = []

    def recording_loader(*args, **kwargs):
        started.append(kwargs["num_workers"])
        return DataLoader(*args, **kwargs)

    monkeypatch.setattr(local_engine, "DataLoader", recording_loader)
    images = sorted(str(p) for p in image_folder.rglob("*.png"))  # 6 images: 2 batches of 4
    X = extract_features(images, "tiny", weights=None, batch_size=4, num_workers=1000)
    assert started == [2] and np.isfinite(X).all()


def test_a_weights_file_that_is_not_weights_is_one_line_that_never_suggests_unpickling(
    image_folder, tmp_path
):
    for name, content in (("text.pth", b"these are not weights"), ("pickled.pth", None)):
        path = tmp_path / name
        if content is None:  # a pickle of a non-tensor object: weights_only refuses it
            torch.save({"note": Path("/x")}, path)
        else:
            path.write_bytes(content)
        result = featx_cli("extract", image_folder, *TINY, "--weights", path, "--cache", tmp_path / "c")
        line = one_line_error(result, str(path))
        assert "weights_only=False" not in result.stderr and "weights_only" not in line


def test_weights_of_another_architecture_say_briefly_which_keys_differ(image_folder, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(__import__("torchvision").models.resnet18().state_dict(), path)
    result = featx_cli("extract", image_folder, *TINY, "--weights", path, "--cache", tmp_path / "c")
    line = one_line_error(result, "do not fit", "missing", "of another shape", "another architecture")
    assert len(line) < 600


def test_a_vectors_file_deleted_while_its_keys_remain_is_damage_and_recomputed(tmp_path):
    images = [photo(i) for i in range(6)]
    reference = extract_features(images, "tiny", weights=None, precision="fp32", cache_dir=tmp_path)
    (namespace,) = FeatureCache(tmp_path).namespaces()
    for vectors_file in namespace.path.glob("*.vectors.npy"):
        vectors_file.unlink()
    with pytest.warns(UserWarning, match="unreadable"):
        again = extract_features(images, "tiny", weights=None, precision="fp32", cache_dir=tmp_path)
    assert_same_vectors(again, reference)


def test_one_colour_array_without_a_list_is_refused_saying_how_to_pass_one_image_or_a_batch():
    image = photo(0)  # (H, W, 3)
    with pytest.raises(ParameterError, match=r"Pass \[image\] for one image"):
        PretrainedFeatures("tiny", weights=None).fit_transform(image)
    one = PretrainedFeatures("tiny", weights=None, precision="fp32").fit_transform([image])
    batch = PretrainedFeatures("tiny", weights=None, precision="fp32").fit_transform(image[None])
    assert one.shape == (1, batch.shape[1]) and np.allclose(one, batch, atol=1e-5)


def test_tensors_in_torchvisions_layout_give_the_vectors_and_keys_of_the_same_pixels_as_arrays(tmp_path):
    from featx.inputs.images import content_key, read_content

    arrays = np.stack([photo(i) for i in range(3)])  # (n, H, W, 3) uint8
    tensors = torch.from_numpy(arrays).permute(0, 3, 1, 2)  # (n, 3, H, W), as a DataLoader yields them
    extractor = PretrainedFeatures("tiny", weights=None, precision="fp32", cache_dir=tmp_path)
    reference = extractor.fit_transform(arrays)
    for batch in (tensors, list(tensors), tensors.float().div(255).requires_grad_()):
        assert_same_vectors(extractor.transform(batch), reference)
    from featx.inputs.batches import as_image_list

    (one,) = as_image_list([tensors[0]])
    assert content_key(read_content(one)) == content_key(arrays[0])  # one cache entry for both


@pytest.mark.parametrize(
    "X, error, words",
    [
        (torch.zeros(3, 40, 40, dtype=torch.uint8), ParameterError, ["one CxHxW image", "[image]"]),
        (torch.zeros(40, 40), ParameterError, ["(n, C, H, W)"]),
        (torch.zeros(1, 1, 3, 40, 40), ParameterError, ["(n, C, H, W)"]),
        ({"cat": "cat.png"}, ParameterError, ["dict", "list(X.values())"]),
        ([torch.zeros(5, 40, 40, dtype=torch.uint8)], ImageError, ["invalid_array", "C in (1, 3, 4)"]),
        ([torch.randn(3, 40, 40)], ImageError, ["ambiguous", "[0, 1]"]),  # normalised: not pixels
        ([np.zeros((3, 40, 40), dtype=np.uint8)], ImageError, ["channels-first", "transpose(1, 2, 0)"]),
        (pd.Series([None]), ImageError, ["missing", "None or NaN"]),
        (pd.Series([np.nan]), ImageError, ["missing", "None or NaN"]),
    ],
    ids=["one-tensor", "2-d", "5-d", "dict", "5-channels", "normalised", "numpy-chw", "none", "nan"],
)
def test_x_that_could_mean_something_else_is_refused_saying_what_to_pass(X, error, words):
    with pytest.raises(error) as raised:
        PretrainedFeatures("tiny", weights=None, precision="fp32").fit_transform(X)
    assert all(word in str(raised.value) for word in words), raised.value


def test_float_pixels_a_rounding_step_above_one_are_clipped_not_refused():
    pixels = photo(1).astype(np.float64) / 255
    nudged = pixels.copy()
    nudged[pixels == pixels.max()] = 1.0000001
    extractor = PretrainedFeatures("tiny", weights=None, precision="fp32")
    clean, rounded = extractor.fit_transform([pixels, np.clip(nudged, 0, 1)]), extractor.transform([nudged])
    assert np.allclose(rounded[0], clean[1], atol=1e-6)
    with pytest.raises(Exception, match="float pixels must lie in"):
        extractor.transform([pixels * 255])


def test_a_safetensors_file_that_is_damaged_or_of_another_model_is_one_line(tmp_path):
    from safetensors.torch import save_file

    from featx import build_network

    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ParameterError, match="damaged.safetensors.*not a weights file"):
        build_network("timm/test_vit.r160_in1k", weights=str(damaged), device="cpu", precision="fp32")
    other = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": torch.zeros(4, 3, 3, 3)}, str(other))
    with pytest.raises(ParameterError, match="do not fit backbone 'timm/test_vit.r160_in1k'"):
        build_network("timm/test_vit.r160_in1k", weights=str(other), device="cpu", precision="fp32")


@pytest.mark.parametrize(
    "name", ["timm/", "timm/../../etc/passwd", "", "timm/test_vit.r160_in1k.extra", "TIMM/test_vit"]
)
def test_odd_backbone_names_are_refused_by_name_not_resolved_or_imported(name):
    with pytest.raises(ParameterError, match="not a known backbone"):
        PretrainedFeatures(name, weights=None).fit([photo(0)])


def test_a_stage_sweep_on_a_model_that_lists_no_stages_says_what_to_pass():
    from featx.evaluate import transfer_report

    images, labels = [photo(i) for i in range(6)], np.arange(6) % 2
    with pytest.raises(ParameterError, match="list_nodes"):
        transfer_report(images, labels, backbones="squeezenet1_1", weights=None, layers="stages", cv=2)


def test_featx_backbones_with_a_pattern_that_matches_nothing_says_so_and_fails():
    result = featx_cli("backbones", "--filter", "no_such_net*")
    assert result.returncode == 1 and "no backbone matches 'no_such_net*'" in result.stdout


@pytest.mark.parametrize(
    "backbone, layer",
    [
        ("timm/test_mambaout", "stages.2.blocks.0.ls.stages_2_blocks_0_ls_gamma"),
        ("timm/test_vit4", "blocks.4.attn.getitem_2"),
    ],
)
def test_a_graph_node_that_is_a_weight_or_a_size_is_refused_naming_a_module_to_choose(backbone, layer):
    from featx import feature_size

    with pytest.raises(ParameterError, match=f"layer='{layer}' of {backbone} is not one output per image"):
        feature_size(backbone, layer)


def test_a_model_fx_cannot_trace_is_named_with_what_to_pass_instead():
    from torch import nn

    from featx.models.zoo.timm import timm_fx_extractor

    class Branchy(nn.Module):  # control flow on a tensor's value: no symbolic trace can follow it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            x = self.conv(x)
            return x if x.sum() > 0 else -x

    with pytest.raises(
        ParameterError, match="timm model 'Branchy' cannot be traced to layer='conv'.*layer=None"
    ):
        timm_fx_extractor(Branchy(), "conv")


def test_a_refused_http_connection_is_unreachable_naming_the_cause_not_missing_and_not_asked_again():
    from featx.errors import ImageError
    from featx.inputs.images import read_content

    with pytest.raises(ImageError) as raised:
        read_content("http://127.0.0.1:9/photo.jpg", 0)  # port 9 (discard): nothing listens here
    assert raised.value.kind == "unreachable" and "cannot connect" in str(raised.value)
    assert "ConnectionRefusedError" in str(raised.value)
    with pytest.raises(ImageError) as again:  # another object of that server, within half a minute
        read_content("http://127.0.0.1:9/other.jpg", 1)
    assert again.value.kind == "unreachable" and "not asked again" in str(again.value)
    assert again.value.index == 1 and again.value.source == "http://127.0.0.1:9/other.jpg"
    # the cause it repeats is said to be another read's, by the URL that failed
    assert "failed moments ago, reading http://127.0.0.1:9/photo.jpg: cannot connect" in again.value.reason


@contextlib.contextmanager
def stalling_server(answer: bytes = b""):
    """An HTTP peer on localhost that accepts every connection, sends ``answer`` (perhaps nothing), then
    goes silent without closing: a server that hangs, or an object store that stalls mid-read."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    held, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            held.append(connection)
            if answer:
                connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


HALF_AN_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n\xff\xd8" + bytes(998)
)


@pytest.mark.parametrize("answer", [b"", HALF_AN_ANSWER], ids=["never-answers", "stalls-mid-body"])
def test_a_server_that_goes_silent_is_a_timed_out_error_row_within_the_timeout_not_a_hang(answer, one_second):
    from featx.errors import ImageError
    from featx.inputs.images import read_content

    with stalling_server(answer) as url:
        start = time.monotonic()
        with pytest.raises(ImageError) as raised:
            read_content(f"{url}/photo.jpg", 3)
        seconds = time.monotonic() - start
    assert raised.value.kind == "unreachable" and raised.value.index == 3
    assert "timed out" in str(raised.value) and "--read-timeout" in str(raised.value)
    assert seconds < 15  # two attempts of about a second each, not aiohttp's five minutes


def test_the_read_timeout_flag_turns_a_hanging_server_into_error_rows_and_the_job_ends(
    image_folder, tmp_path
):
    with stalling_server() as url:
        manifest = tmp_path / "manifest.csv"
        local = sorted(str(p) for p in image_folder.rglob("*") if p.is_file())
        rows = local + [f"{url}/a.jpg", f"{url}/b.jpg"]
        manifest.write_text("path\n" + "\n".join(rows) + "\n")
        args = ["--backbone", "tiny_backbone:TINY", "--weights", "none", "--quiet", "--num-workers", "0"]
        start = time.monotonic()
        done = featx_cli(
            "extract",
            manifest,
            "--cache",
            tmp_path / "c",
            "--out",
            tmp_path / "f.parquet",
            "--read-timeout",
            "1",
            *args,
        )
        seconds = time.monotonic() - start
    # the local images were extracted; the job is unfinished, and says so in one line
    assert done.returncode == 1 and load_features(tmp_path / "f.parquet")[0].shape[0] == len(local)
    assert done.stderr.strip().splitlines()[-1].startswith("featx: error: 2 inputs could not be reached")
    errors = (tmp_path / "f.errors.csv").read_text()
    assert errors.count("unreachable") == 2 and "/a.jpg" in errors and "/b.jpg" in errors
    assert errors.count("timed out") == 2  # b.jpg is asked too: a time-out is one object's failure
    assert seconds < 120
    refused = featx_cli("extract", manifest, "--cache", tmp_path / "c", "--read-timeout", "0", *args)
    assert refused.returncode == 2 and "--read-timeout" in refused.stderr


def test_a_file_over_the_byte_bound_is_refused_unread_and_urls_and_members_are_bounded_too(tmp_path):
    import io
    import tarfile
    import time

    from featx.errors import ImageError
    from featx.inputs import images
    from featx.inputs.shards import stream_samples

    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:  # sparse: 1.4 GB that take no disk and must not be read
        handle.truncate(images.MAX_BYTES + 1)
    start = time.perf_counter()
    with pytest.raises(ImageError, match="too_large: over 1.4 GB"):
        images.read_content(huge, 0)
    assert time.perf_counter() - start < 1.0
    small = tmp_path / "small.png"
    small.write_bytes(bytes(101))
    with pytest.raises(ImageError, match="too_large"):
        images.read_content(small.as_uri(), 0, max_bytes=100)  # through fsspec, no further than the bound
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        info = tarfile.TarInfo("big.png")
        info.size = 101
        tar.addfile(info, io.BytesIO(bytes(101)))
    (sample,) = stream_samples(str(shard), max_bytes=100)
    assert sample.content is None and "101 bytes, over the 100" in sample.unused[0][1]


def test_a_shard_whose_server_stalls_mid_stream_ends_in_the_shards_timed_out_error_row(one_second):
    from featx.engines.streaming import stream_shard
    from featx.inputs.images import MAX_PIXELS
    from featx.models.preprocessing import Preprocessing

    shard = io.BytesIO()
    with tarfile.open(fileobj=shard, mode="w") as tar:
        info = tarfile.TarInfo("000000.png")
        info.size = 5000
        tar.addfile(info, io.BytesIO(bytes(5000)))
    header = f"HTTP/1.1 200 OK\r\nContent-Length: {len(shard.getvalue())}\r\n\r\n".encode()
    with stalling_server(header + shard.getvalue()[:1500]) as url:  # stalls inside the first member
        start = time.monotonic()
        entries = list(stream_shard(0, f"{url}/shard-000.tar", set(), Preprocessing(), MAX_PIXELS))
        seconds = time.monotonic() - start
    (failed,) = entries
    assert failed.path == f"{url}/shard-000.tar" and failed.error.kind == "unreachable"
    assert "timed out" in failed.error.reason and seconds < 15
