"""Hostile HTTP servers, on localhost: one URL that never answers ahead of good ones on the same server,
answers trickled a byte at a time (headers or body), silence costing more than the stated timeout, 5xx and
429 answers, redirect loops, answers cut mid-body; and read timeouts that are no bound (``inf``)."""

import collections
import contextlib
import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
from conftest import TINY_CLI, encode, photo, serving, trickle
from test_cache import featx_cli

from featx import load_features
from featx.errors import ImageError, ParameterError
from featx.inputs import timeouts
from featx.inputs.images import read_content

GOOD = {f"/good/{n}.png": encode(photo(n)) for n in range(3)}
STEP_S = 0.2  # a trickle: one byte this often
ODD = {"/no-content", "/moved-nowhere", "/partial", "/whole-range", "/to-404", "/to-refused", "/gzip"}
ODD |= {"/bad-gzip", "/http10", "/not-http"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests: collections.Counter = collections.Counter()
    stop = threading.Event()

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        Handler.requests[self.path] += 1
        route, _, argument = self.path.partition("?")
        if route in GOOD:
            self.answer(200, GOOD[route])
        elif route == "/silent":
            Handler.stop.wait(30)  # accepts, never answers
        elif route == "/trickle-body":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            trickle(self, b"\xff" * 100000, STEP_S)
        elif route == "/trickle-headers":
            trickle(self, b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 100000 + b"\r\n\r\n", STEP_S)
        elif route == "/status":
            self.answer(int(argument), b"oops")
        elif route == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "/drop":
            self.close_connection = True  # closes without a word
        elif route == "/cut":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + GOOD["/good/0.png"][:100])
            self.wfile.flush()
            self.close_connection = True
        elif route in ODD:
            self.odd(route)
        else:
            self.answer(404, b"no")

    def odd(self, route):
        """Answers that are no error status yet no whole object, or no HTTP at all; and odd whole ones."""
        png = GOOD["/good/0.png"]
        if route in ("/no-content", "/moved-nowhere"):
            self.send_response(204 if route == "/no-content" else 301)  # a 301 with no Location
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route in ("/partial", "/whole-range"):  # 206 to a request that asked for no range
            part = png[:100] if route == "/partial" else png
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{len(part) - 1}/{len(png)}")
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            self.wfile.write(part)
        elif route in ("/to-404", "/to-refused"):
            self.send_response(302)
            self.send_header(
                "Location", "/nothing-here" if route == "/to-404" else "http://127.0.0.1:9/a.png"
            )
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route in ("/gzip", "/bad-gzip"):
            body = gzip.compress(png) if route == "/gzip" else b"not gzip at all"
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:  # an HTTP/1.0 answer without a length, or a port that speaks another protocol
            raw = b"HTTP/1.0 200 OK\r\n\r\n" + png if route == "/http10" else b"SSH-2.0-OpenSSH_9.6\r\n"
            self.wfile.write(raw)
            self.wfile.flush()
            self.close_connection = True

    do_HEAD = do_GET  # noqa: N815 (a silent server is silent to every request)

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    with serving(Handler) as url:
        yield url


@pytest.fixture(autouse=True)
def counted():
    Handler.requests.clear()


def failure(url, index=0) -> tuple[ImageError, float]:
    start = time.monotonic()
    with pytest.raises(ImageError) as raised:
        read_content(url, index)
    return raised.value, time.monotonic() - start


def manifest_of(tmp_path, urls):
    path = tmp_path / "manifest.csv"
    path.write_text("path\n" + "\n".join(urls) + "\n")
    return path


def extract(manifest, tmp_path, *more):
    args = ["--cache", tmp_path / "c", "--out", tmp_path / "f.parquet", *TINY_CLI, "--num-workers", "0"]
    return featx_cli("extract", manifest, *args, *more)


# -- one object's failure is that object's ------------------------------------------------------------


def test_one_url_that_never_answers_fails_alone_and_the_good_urls_of_its_server_are_extracted(
    server, tmp_path, one_second
):
    good = [server + path for path in GOOD]
    manifest = manifest_of(tmp_path, [f"{server}/silent", *good])
    for run in range(2):  # the rerun the message advises asks every URL again, and finds the good ones cached
        done = extract(manifest, tmp_path, "--read-timeout", "1")
        assert done.returncode == 1
        assert done.stderr.strip().splitlines()[-1].startswith("featx: error: 1 inputs could not be reached")
        errors = (tmp_path / "f.errors.csv").read_text()
        assert errors.count("unreachable") == 1 and "/silent" in errors and "not asked again" not in errors
        assert load_features(tmp_path / "f.parquet")[0].shape[0] == len(good)
        assert f"cached: {3 * run}  computed: {3 - 3 * run}" in done.stdout


def test_a_refused_connection_still_skips_its_server_but_a_dropped_or_cut_answer_does_not(server, one_second):
    error, _ = failure("http://127.0.0.1:9/a.png")
    assert error.kind == "unreachable" and "cannot connect" in error.reason
    assert "not asked again" in failure("http://127.0.0.1:9/b.png", 1)[0].reason
    cut, _ = failure(f"{server}/cut")
    assert cut.kind == "unreachable" and "closed the connection mid-answer" in cut.reason
    assert Handler.requests["/cut"] == 2  # tried again once, like a stall
    assert read_content(f"{server}/good/0.png") == GOOD["/good/0.png"]  # its server is still asked
    dropped, _ = failure(f"{server}/drop")
    assert dropped.kind == "unreachable" and "the server dropped the connection" in dropped.reason
    assert read_content(f"{server}/good/1.png") == GOOD["/good/1.png"]


# -- time with a bound ----------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/trickle-body", "/trickle-headers"])
def test_a_server_trickling_a_byte_at_a_time_is_timed_out_at_its_deadline_not_held_for_ever(
    server, one_second, route
):
    error, seconds = failure(server + route)
    assert error.kind == "unreachable" and error.reason.startswith("timed out: ")
    assert "2 attempts" in error.reason and "--read-timeout" in error.reason
    assert seconds < 2 * (1 + 3 * STEP_S)  # two attempts of about the 1 s timeout, not 100,000 steps


def test_a_silent_server_costs_the_stated_timeout_times_the_stated_attempts_one_request_each(
    server, one_second
):
    error, seconds = failure(f"{server}/silent")
    assert error.reason.startswith("timed out: no answer within 1 s, 2 attempts")
    assert 1.8 < seconds < 3.5  # 2 attempts x 1 s: not 4 s (two requests an attempt)
    assert Handler.requests["/silent"] == 2


def test_the_deadline_grows_with_what_was_received_so_a_big_answer_at_a_fair_rate_is_read(server, one_second):
    assert read_content(f"{server}/good/1.png") == GOOD["/good/1.png"]
    assert timeouts.DeadlineExceeded(0, 1.0, 1.0).args[0] == "no answer within 1 s"
    assert "slower than its deadline (1 s, and 1 s more per 1 MB received)" in str(
        timeouts.DeadlineExceeded(7, 3.0, 1.0)
    )


@pytest.mark.parametrize("value", ["inf", "Infinity", "nan", "0", "-1", "1e300", "abc"])
def test_a_read_timeout_that_is_no_bound_is_refused_by_flag_and_by_variable(
    server, tmp_path, monkeypatch, value
):
    manifest = manifest_of(tmp_path, [server + path for path in GOOD])  # a local manifest of URLs
    Handler.requests.clear()
    flag = extract(manifest, tmp_path, "--read-timeout", value)
    assert flag.returncode == 2 and "--read-timeout" in flag.stderr and "at most 86400" in flag.stderr
    monkeypatch.setenv(timeouts.VARIABLE, value)
    with pytest.raises(ParameterError, match=f"{timeouts.VARIABLE}="):
        timeouts.read_timeout()
    variable = extract(manifest, tmp_path)
    (line,) = variable.stderr.strip().splitlines()
    assert variable.returncode == 1 and line.startswith(f"featx: error: {timeouts.VARIABLE}=")
    assert not (tmp_path / "c").exists() and Handler.requests.total() == 0  # refused before any work


# -- server answers said as what they are ---------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_a_server_failure_or_rate_limit_is_unreachable_with_its_status_and_the_job_exits_1(
    server, tmp_path, one_second, status
):
    error, _ = failure(f"{server}/status?{status}")
    assert error.kind == "unreachable" and f"answered HTTP {status}" in error.reason
    assert "not a missing file" in error.reason
    manifest = manifest_of(tmp_path, [f"{server}/status?{status}", *(server + path for path in GOOD)])
    done = extract(manifest, tmp_path)
    assert done.returncode == 1 and "run the same command again" in done.stderr.strip().splitlines()[-1]
    errors = (tmp_path / "f.errors.csv").read_text()
    assert f'unreachable,"the server answered HTTP {status}' in errors and "not asked again" not in errors
    assert load_features(tmp_path / "f.parquet")[0].shape[0] == len(GOOD)  # the server's good objects


@pytest.mark.parametrize(
    "route, kind, words",
    [
        ("/status?404", "missing", "no such object"),
        ("/status?403", "permission", "HTTP 403"),
        ("/status?400", "unreadable", "HTTP 400"),
        ("/loop", "unreadable", "a redirect loop: still redirected after 10 redirects"),
        ("/no-content", "unreadable", "HTTP 204 (No Content), not the whole object"),
        ("/partial", "unreadable", "HTTP 206 (Partial Content), not the whole object"),
        ("/moved-nowhere", "unreadable", "HTTP 301 (Moved Permanently), not the whole object"),
        ("/to-404", "missing", "no such object"),
        ("/to-refused", "unreachable", "cannot connect"),  # the redirect's server, not this one
        ("/bad-gzip", "unreadable", "the server's answer cannot be decoded"),
        ("/not-http", "unreadable", "the server's answer is not HTTP (Bad status line"),
    ],
)
def test_other_answers_are_named_for_what_they_are(server, one_second, route, kind, words):
    error, _ = failure(server + route)
    assert error.kind == kind and words in error.reason and "\n" not in error.reason
    with contextlib.suppress(ImageError):  # none of them marks the server
        read_content(server + route)
    assert read_content(f"{server}/good/2.png") == GOOD["/good/2.png"]


@pytest.mark.parametrize("route", ["/whole-range", "/gzip", "/http10"])
def test_odd_answers_that_hold_the_whole_object_are_read_as_it(server, one_second, route):
    assert read_content(server + route) == GOOD["/good/0.png"]


def test_decoding_workers_read_urls_within_their_deadline_and_name_server_answers_alike(server, tmp_path):
    urls = [f"{server}/status?503", *(server + path for path in GOOD), f"{server}/loop"]
    done = extract(manifest_of(tmp_path, urls), tmp_path, "--num-workers", "2", "--batch-size", "2")
    assert done.returncode == 1, done.stderr
    errors = (tmp_path / "f.errors.csv").read_text()
    assert "HTTP 503" in errors and "a redirect loop" in errors
    assert load_features(tmp_path / "f.parquet")[0].shape[0] == len(GOOD)
