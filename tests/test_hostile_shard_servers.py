"""Hostile servers of WebDataset shards, on localhost: a shard streamed over HTTP, or read by range for its
members, whose server trickles a byte at a time (from the start, or after whole samples), and a server
that ignores byte ranges. Each ends at its deadline as one failure that says what happened, never a job
held for as long as the server likes."""

import io
import re
import tarfile
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import TINY_CLI, encode, photo, write_shard
from test_cache import featx_cli

from featx import load_features
from featx.errors import ImageError, ShardReadError
from featx.inputs import remote_files, shards, timeouts
from featx.inputs.images import read_content

IMAGES = {f"{n:06d}": encode(photo(n)) for n in range(6)}
STEP_S = 0.2  # a trickle: one byte this often


def shard_bytes(samples) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return write_shard(Path(folder) / "s.tar", samples).read_bytes()


SHARD = shard_bytes([(key, {"png": data, "cls": b"1"}) for key, data in IMAGES.items()])
# a sample past the first MB: reading it by range asks for bytes at an offset
BIG = shard_bytes([("padding", {"bin": bytes(3 << 19)}), ("000001", {"png": IMAGES["000001"]})])
FAST = 2 * tarfile.RECORDSIZE  # /late.tar sends this much at once, then trickles


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stop = threading.Event()

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BIG if "big" in self.path else SHARD)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):  # noqa: N802
        shard = BIG if "big" in self.path else SHARD
        wanted = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        if "no-ranges" in self.path or wanted is None:
            body, status = shard, 200
        else:
            start, end = int(wanted[1]), int(wanted[2])
            body, status = shard[start : end + 1], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(shard)}")
        self.end_headers()
        fast = {"/trickle.tar": 0, "/late.tar": FAST}.get(self.path, len(body))
        if self.path == "/big-range-trickles.tar" and status == 206:
            fast = len(body) // 2  # half the range, then a trickle
        self.wfile.write(body[:fast])
        self.wfile.flush()
        for byte in body[fast:]:
            if Handler.stop.wait(STEP_S):
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:  # the client gave up
                return


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    Handler.stop.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def one_second(monkeypatch):
    monkeypatch.setenv(timeouts.VARIABLE, "1")
    timeouts.set_read_timeout(1.0)
    yield
    timeouts.set_read_timeout(timeouts.DEFAULT_READ_TIMEOUT_S)


def streamed_keys(url) -> tuple[list[str], ShardReadError | None, float]:
    start, keys = time.monotonic(), []
    try:
        for sample in shards.stream_samples(url):
            keys.append(sample.key)
    except ShardReadError as error:
        return keys, error, time.monotonic() - start
    return keys, None, time.monotonic() - start


def test_a_shard_served_whole_streams_and_its_members_read_by_range_are_the_shards_own(server, one_second):
    keys, error, _ = streamed_keys(f"{server}/good.tar")
    assert error is None and keys == list(IMAGES)
    assert read_content(f"tar://000002.png::{server}/good.tar") == IMAGES["000002"]


def test_a_shard_stream_trickled_from_its_start_ends_at_its_deadline(server, one_second):
    keys, error, seconds = streamed_keys(f"{server}/trickle.tar")
    assert keys == [] and timeouts.timed_out(error)
    assert seconds < 1 + 4 * STEP_S  # the 1 s timeout, not the trickle's hours


def kept_before_the_trickle(keys: list[str]) -> bool:
    """Whether ``keys`` are the samples whose image arrived whole before /late.tar trickles: each is kept,
    though tarfile's stream asks for a record (10 KB) at a time, and the last one's label member may not
    have arrived (a sample being read is kept when its image was read whole)."""
    with tarfile.open(fileobj=io.BytesIO(SHARD)) as tar:
        images = [m for m in tar.getmembers() if m.name.endswith(".png")]
    return keys == [m.name.split(".")[0] for m in images if m.offset_data + m.size <= FAST]


def test_a_shard_stream_trickled_after_whole_samples_keeps_them_and_ends_at_its_deadline(server, one_second):
    keys, error, seconds = streamed_keys(f"{server}/late.tar")
    assert kept_before_the_trickle(keys) and timeouts.timed_out(error)
    assert seconds < 1 + 4 * STEP_S


def test_the_batch_job_names_a_trickled_shard_timed_out_once_and_keeps_the_samples_before(server, tmp_path):
    out = tmp_path / "f.parquet"
    start = time.monotonic()
    done = featx_cli(
        "extract",
        f"{server}/late.tar",
        "--cache",
        tmp_path / "c",
        "--out",
        out,
        *TINY_CLI,
        "--num-workers",
        "0",
        "--read-timeout",
        "1",
    )
    assert time.monotonic() - start < 120  # the process's start and the network, not the trickle's hours
    assert done.returncode == 1, done.stderr
    errors = (tmp_path / "f.errors.csv").read_text()
    assert "unreachable" in errors and "timed out" in errors and "1 attempt" in errors
    assert "2 attempts" not in errors  # a streamed shard is read once; its rerun resumes it
    assert kept_before_the_trickle(load_features(out)[1]["sample"].tolist())


def test_a_member_read_by_range_from_a_trickling_server_is_timed_out_as_that_member(server, one_second):
    start = time.monotonic()
    with pytest.raises(ImageError) as raised:
        read_content(f"tar://000001.png::{server}/trickle.tar")
    assert raised.value.kind == "unreachable" and raised.value.reason.startswith("timed out: ")
    assert time.monotonic() - start < 2 * (1 + 4 * STEP_S)  # two attempts of about the timeout


def test_a_range_trickled_after_half_states_the_deadline_it_was_given_not_silence_within_the_timeout(
    server, one_second
):
    start = time.monotonic()
    with pytest.raises(ImageError) as raised:
        read_content(f"tar://000001.png::{server}/big-range-trickles.tar")
    seconds = time.monotonic() - start
    assert raised.value.kind == "unreachable" and raised.value.reason.startswith("timed out: ")
    # the server answered half the MB asked for, then trickled: each attempt waited its 2 s deadline
    assert "no answer within 1 s" not in raised.value.reason and "within 2 s" in raised.value.reason
    assert "1,048,576 bytes asked for" in raised.value.reason and "2 attempts" in raised.value.reason
    assert 3.5 < seconds < 20  # two attempts of 1 s and 1 s more for the MB asked for, on a loaded machine


def test_a_server_that_ignores_byte_ranges_is_named_for_it_not_read_as_a_corrupt_shard(server, one_second):
    assert read_content(f"tar://000001.png::{server}/big.tar") == IMAGES["000001"]  # by range
    assert read_content(f"tar://000002.png::{server}/no-ranges.tar") == IMAGES["000002"]  # within 1 read
    with pytest.raises(ImageError) as raised:
        read_content(f"tar://000001.png::{server}/big-no-ranges.tar")
    assert "does not serve byte ranges" in raised.value.reason and "streams it" in raised.value.reason
    keys, error, _ = streamed_keys(f"{server}/big-no-ranges.tar")  # streamed, it is read whole
    assert error is None and keys == ["padding", "000001"]


def test_time_a_reader_spends_between_reads_of_a_stream_is_not_charged_to_the_server(server, one_second):
    stream = remote_files.open_shard(f"{server}/good.tar", streamed=True)
    first = stream.read(512)
    time.sleep(1.5)  # longer than the 1 s budget: a job computing a batch before it reads on
    rest = stream.read()
    stream.close()
    assert first + rest == SHARD
