"""Hostile servers of a streamed WebDataset shard, on localhost: one that drops the connection mid-shard,
one that answers 5xx, and one that goes silent after sending whole samples that fill less than a tar
record. Each is the shard's one failure, in featx's words, with the samples it sent whole kept; never a
traceback from the HTTP client."""

import io
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
from featx.errors import ShardReadError
from featx.inputs import shards, timeouts
from featx.inputs.remote import read_error

IMAGES = {f"{n:06d}": encode(photo(n)) for n in range(6)}


def shard_bytes(samples) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return write_shard(Path(folder) / "s.tar", samples).read_bytes()


SHARD = shard_bytes([(key, {"png": data, "cls": b"1"}) for key, data in IMAGES.items()])


def end_of_sample(key: str) -> int:
    """Where the last member of sample ``key`` ends, padded to its tar block: the next header starts there."""
    with tarfile.open(fileobj=io.BytesIO(SHARD)) as tar:
        end = max(m.offset_data + m.size for m in tar.getmembers() if m.name.startswith(key + "."))
    return end + (-end) % tarfile.BLOCKSIZE


TWO_SAMPLES = end_of_sample("000001")  # less than a tar record (10 KB): tarfile's stream asks for more
HALF = len(SHARD) // 2


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stop = threading.Event()

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/503.tar":
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(SHARD)))
        self.end_headers()
        sent = {"/dropped.tar": HALF, "/silent-after-two.tar": TWO_SAMPLES}[self.path]
        self.wfile.write(SHARD[:sent])
        self.wfile.flush()
        if self.path == "/dropped.tar":
            self.close_connection = True  # closes before the length it announced
        else:
            Handler.stop.wait(60)  # silent, the connection held open


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


def streamed(url: str) -> tuple[list[str], ShardReadError | None, float]:
    start, keys = time.monotonic(), []
    try:
        for sample in shards.stream_samples(url):
            keys.append(sample.key)
    except ShardReadError as error:
        return keys, error, time.monotonic() - start
    return keys, None, time.monotonic() - start


def samples_whole_within(limit: int) -> list[str]:
    return [key for key in IMAGES if end_of_sample(key) <= limit]


def test_a_shard_whose_server_drops_the_connection_mid_shard_is_a_cut_answer_not_a_client_error(
    server, one_second
):
    keys, error, _ = streamed(f"{server}/dropped.tar")
    assert error is not None  # featx's ShardReadError, not aiohttp's ClientPayloadError
    assert keys == samples_whole_within(HALF)
    failure = read_error(len(keys), f"{server}/dropped.tar", error.cause, attempts=1)
    assert failure.kind == "unreachable"
    assert failure.reason == "the server closed the connection mid-answer, 1 attempt"


def test_a_shard_answered_503_is_the_servers_failure_not_a_client_error(server, one_second):
    keys, error, _ = streamed(f"{server}/503.tar")
    assert keys == [] and error is not None  # not aiohttp's ClientResponseError
    failure = read_error(0, f"{server}/503.tar", error.cause, attempts=1)
    assert failure.kind == "unreachable" and "HTTP 503" in failure.reason


def test_samples_sent_whole_before_a_silence_are_kept_though_they_fill_no_tar_record(server, one_second):
    keys, error, seconds = streamed(f"{server}/silent-after-two.tar")
    assert keys == ["000000", "000001"]  # both arrived whole: the silence came after them
    assert timeouts.timed_out(error) and error.member is None  # between samples, not inside 000000.png
    assert seconds < 10  # the 1 s timeout, on a loaded machine


def test_the_batch_job_names_a_dropped_and_a_failing_shard_in_its_errors_and_keeps_what_arrived(
    server, tmp_path
):
    out = tmp_path / "f.parquet"
    done = featx_cli(
        "extract",
        f"{server}/{{dropped,503}}.tar",
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
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = (tmp_path / "f.errors.csv").read_text()
    assert "closed the connection mid-answer, 1 attempt" in errors and "HTTP 503" in errors
    assert errors.count("unreachable") == 2
    assert load_features(out)[1]["sample"].tolist() == samples_whole_within(HALF)
