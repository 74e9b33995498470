"""Hostile servers of WebDataset shards, on localhost: a shard streamed over HTTP, or read by range for its
members, whose server trickles a byte at a time (from the start, or after whole samples), goes silent
after whole samples that fill less than a tar record, drops the connection mid-shard, answers 5xx, or
ignores byte ranges. Each ends at its deadline as the shard's one failure, in featx's words, with the
samples it sent whole kept: never a job held for as long as the server likes, never the HTTP client's
traceback."""

import io
import re
import tarfile
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from conftest import TINY_CLI, encode, photo, serving, trickle, write_shard
from test_cache import featx_cli

from featx import load_features
from featx.errors import ImageError, ShardReadError
from featx.inputs import remote_files, shards, timeouts
from featx.inputs.images import read_content
from featx.inputs.remote import read_error

IMAGES = {f"{n:06d}": encode(photo(n)) for n in range(6)}
STEP_S = 0.2  # a trickle: one byte this often


def shard_bytes(samples) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return write_shard(Path(folder) / "s.tar", samples).read_bytes()


SHARD = shard_bytes([(key, {"png": data, "cls": b"1"}) for key, data in IMAGES.items()])
# a sample past the first MB: reading it by range asks for bytes at an offset
BIG = shard_bytes([("padding", {"bin": bytes(3 << 19)}), ("000001", {"png": IMAGES["000001"]})])
FAST = 2 * tarfile.RECORDSIZE  # /late.tar sends this much at once, then trickles


def end_of_sample(key: str) -> int:
    """Where the last member of sample ``key`` ends, padded to its tar block: the next header starts there."""
    with tarfile.open(fileobj=io.BytesIO(SHARD)) as tar:
        end = max(m.offset_data + m.size for m in tar.getmembers() if m.name.startswith(key + "."))
    return end + (-end) % tarfile.BLOCKSIZE


def samples_whole_within(limit: int) -> list[str]:
    return [key for key in IMAGES if end_of_sample(key) <= limit]


TWO_SAMPLES = end_of_sample("000001")  # less than a tar record (10 KB): tarfile's stream asks for more
HALF = len(SHARD) // 2


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
        if self.path == "/no-content.tar":
            self.send_response(204)
            self.end_headers()
            return
        if self.path in ("/503.tar", "/dropped.tar", "/silent-after-two.tar"):
            self.stream_then_fail()
            return
        shard = BIG if "big" in self.path else SHARD
        wanted = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        if "no-ranges" in self.path or wanted is None:
            body, status = shard, 200
        else:
            start, end = int(wanted[1]), int(wanted[2])
            if "wrong-range" in self.path:  # the bytes of the start, said to be those of the start
                start, end = 0, end - start
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
        trickle(self, body[fast:], STEP_S)

    def stream_then_fail(self):
        """A 503; or the shard announced whole, then cut off after half, or silent after two samples."""
        if self.path == "/503.tar":
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(SHARD)))
        self.end_headers()
        self.wfile.write(SHARD[: HALF if self.path == "/dropped.tar" else TWO_SAMPLES])
        self.wfile.flush()
        if self.path == "/dropped.tar":
            self.close_connection = True  # closes before the length it announced
        else:
            Handler.stop.wait(60)  # silent, the connection held open


def extract_with_one_second_reads(source: str, tmp_path):
    return featx_cli(
        "extract", source, "--cache", tmp_path / "c", "--out", tmp_path / "f.parquet", *TINY_CLI,
        "--num-workers", "0", "--read-timeout", "1",
    )  # fmt: skip


@pytest.fixture(scope="module")
def server():
    with serving(Handler) as url:
        yield url


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
    assert seconds < 10  # the 1 s timeout on a loaded machine, not the trickle's hours


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
    assert seconds < 10


def test_the_batch_job_names_a_trickled_shard_timed_out_once_and_keeps_the_samples_before(server, tmp_path):
    out = tmp_path / "f.parquet"
    start = time.monotonic()
    done = extract_with_one_second_reads(f"{server}/late.tar", tmp_path)
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
    assert time.monotonic() - start < 20  # two attempts of about the timeout, on a loaded machine


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
    with pytest.raises(ImageError) as raised:  # 206, with another range than the one asked for
        read_content(f"tar://000001.png::{server}/big-wrong-range.tar")
    assert "does not serve byte ranges" in raised.value.reason and "HTTP 206 bytes 0-" in raised.value.reason


def test_time_a_reader_spends_between_reads_of_a_stream_is_not_charged_to_the_server(server, one_second):
    stream = remote_files.open_shard(f"{server}/good.tar", streamed=True)
    first = stream.read(512)
    time.sleep(1.5)  # longer than the 1 s budget: a job computing a batch before it reads on
    rest = stream.read()
    stream.close()
    assert first + rest == SHARD


def test_a_shard_whose_server_drops_the_connection_mid_shard_is_a_cut_answer_not_a_client_error(
    server, one_second
):
    keys, error, _ = streamed_keys(f"{server}/dropped.tar")
    assert error is not None  # featx's ShardReadError, not aiohttp's ClientPayloadError
    assert keys == samples_whole_within(HALF)
    failure = read_error(len(keys), f"{server}/dropped.tar", error.cause, attempts=1)
    assert failure.kind == "unreachable"
    assert failure.reason == "the server closed the connection mid-answer, 1 attempt"


def test_a_shard_answered_503_is_the_servers_failure_not_a_client_error(server, one_second):
    keys, error, _ = streamed_keys(f"{server}/503.tar")
    assert keys == [] and error is not None  # not aiohttp's ClientResponseError
    failure = read_error(0, f"{server}/503.tar", error.cause, attempts=1)
    assert failure.kind == "unreachable" and "HTTP 503" in failure.reason


def test_samples_sent_whole_before_a_silence_are_kept_though_they_fill_no_tar_record(server, one_second):
    keys, error, seconds = streamed_keys(f"{server}/silent-after-two.tar")
    assert keys == ["000000", "000001"]  # both arrived whole: the silence came after them
    assert timeouts.timed_out(error) and error.member is None  # between samples, not inside 000000.png
    assert seconds < 10  # the 1 s timeout, on a loaded machine


def test_the_batch_job_names_a_dropped_and_a_failing_shard_in_its_errors_and_keeps_what_arrived(
    server, tmp_path
):
    out = tmp_path / "f.parquet"
    done = extract_with_one_second_reads(f"{server}/{{dropped,503}}.tar", tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = (tmp_path / "f.errors.csv").read_text()
    assert "closed the connection mid-answer, 1 attempt" in errors and "HTTP 503" in errors
    assert errors.count("unreachable") == 2
    assert load_features(out)[1]["sample"].tolist() == samples_whole_within(HALF)


def test_bytes_that_arrived_before_a_stream_failed_are_handed_over_before_the_failure():
    class Cut:  # a server that sent 100 bytes, then dropped the connection
        answers = [b"x" * 100, OSError("the server dropped the connection")]

        def read(self, n):
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    stream = remote_files._ArrivedReader(Cut())
    assert stream.read(512) == b"x" * 100  # what arrived: it may end a member
    with pytest.raises(OSError, match="dropped"):
        stream.read(512)


def test_a_shard_answered_204_is_named_for_its_status_not_read_as_an_empty_shard(server, one_second):
    keys, error, _ = streamed_keys(f"{server}/no-content.tar")
    assert keys == [] and error is not None
    failure = read_error(0, f"{server}/no-content.tar", error.cause, attempts=1)
    assert failure.kind == "unreadable" and "HTTP 204" in failure.reason, failure.reason
