"""Every network read has a timeout and every input a deadline: a server that accepts and never answers,
stalls mid-read, or trickles its answer a byte at a time becomes one input's error row (``unreachable``,
"timed out") instead of a job that hangs.

Without this, fsspec's HTTP file system waits for aiohttp's five-minute default and s3fs for botocore's
minute per attempt, several attempts over. The bound is ``FEATX_READ_TIMEOUT`` seconds (default 60), or
``featx extract --read-timeout``: the longest wait for a connection, and the longest silence while reading.
It is set in fsspec's configuration (``fsspec.config.conf``) for ``http``/``https`` and ``s3`` (where the
user's own settings for those keys win) before a process's first remote read; worker processes inherit
the variable. Silence alone is not enough: one input read from an asynchronous file system (HTTP, S3)
is one request per attempt, which must end within the timeout plus one second per ``MIN_RATE`` bytes
received (:func:`read_within_deadline`), so a trickle ends like silence.

A server that cannot be connected to (it refuses connections, or its host is unknown) is remembered
for ``UNREACHABLE_TTL_S`` seconds by the process that tried it: the next reads from it fail at once (kind ``unreachable``) instead of each waiting
through its own retries, so a job whose object store died ends in seconds, listing what it could not
read. A read that timed out, or whose connection was dropped, is that object's failure only: the
server's other objects are still asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from featx.errors import FeatxError, ParameterError

DEFAULT_READ_TIMEOUT_S = 60.0
MAX_READ_TIMEOUT_S = 86400.0  # a day: anything longer is no bound
MIN_RATE = 1 << 20  # bytes a second: each attempt's deadline grows by a second per MB received
CHUNK = 1 << 20
VARIABLE = "FEATX_READ_TIMEOUT"
ATTEMPTS = 2  # of a whole read that timed out: a stall is often one slow connection, not a dead server
UNREACHABLE_TTL_S = 30.0
_unreachable: dict[str, tuple[float, str]] = {}  # endpoint -> (when it failed, what failed and why)
_configured = False
_placed: dict[tuple[str, str], Any] = {}  # (protocol, key) -> the value featx put in fsspec's configuration


def read_timeout() -> float:
    """The configured bound in seconds; a value that is not a positive number is refused by name."""
    text = os.environ.get(VARIABLE, "")
    return parse_seconds(text, f"{VARIABLE}={text!r}", "unset it") if text else DEFAULT_READ_TIMEOUT_S


def parse_seconds(text: str, named: str = "--read-timeout", instead: str = "") -> float:
    """A read timeout from text: a finite number of seconds above 0 and at most a day (``inf`` would
    wait for ever, and every remote input would fail); refused naming ``named``."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_READ_TIMEOUT_S:
        raise ParameterError(
            f"{named} is not a number of seconds above 0 and at most {MAX_READ_TIMEOUT_S:g}; "
            f"{instead + ' or ' if instead else ''}use e.g. 60"
        )
    return seconds


def set_read_timeout(seconds: float) -> None:
    """Bound every network read of this process, and of the worker processes it starts, by ``seconds``."""
    global _configured
    os.environ[VARIABLE] = repr(float(seconds))
    _configure(float(seconds))
    _configured = True


def _configure(seconds: float) -> None:
    try:
        import aiohttp
    except ImportError:  # no HTTP file system without aiohttp: nothing to bound there
        aiohttp = None
    if aiohttp is not None:
        timeout = aiohttp.ClientTimeout(connect=seconds, sock_read=seconds)
        for protocol in ("http", "https"):
            _place(protocol, "client_kwargs", {"timeout": timeout})
    _place("s3", "config_kwargs", {"connect_timeout": seconds, "read_timeout": seconds})


def _place(protocol: str, key: str, value: Any) -> None:
    """Set ``fsspec.config.conf[protocol][key]`` unless the user set it (a value featx placed is replaced)."""
    import fsspec.config

    settings = fsspec.config.conf.setdefault(protocol, {})
    if key not in settings or settings[key] is _placed.get((protocol, key)):
        settings[key] = _placed[(protocol, key)] = value


def timed_out(error: BaseException) -> bool:
    """Whether a read failed because the other side went silent (asyncio's, aiohttp's or botocore's
    timeout anywhere in the chain of causes)."""
    return cause_in_chain(error, TimeoutError, "Timeout") is not None


def cause_in_chain(
    error: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...], name_part: str
) -> BaseException | None:
    """The first exception in ``error``'s chain of causes that is a ``kind`` (``()``: none) or whose class
    name holds ``name_part`` (botocore's and aiohttp's own classes derive from neither builtin)."""
    cause: BaseException | None = error
    while cause is not None and not (isinstance(cause, kind) or name_part in type(cause).__name__):
        cause = cause.__cause__ or cause.__context__
    return cause


def ensure() -> None:
    """Bound this process's network reads by the configured timeout, once (sources call it first)."""
    global _configured
    if not _configured:
        _configure(read_timeout())
        _configured = True


def endpoint(url: str) -> str:
    """What one server answers for: ``s3://bucket``, ``https://host:port`` (a tar member: its shard's)."""
    parts = urlsplit(url.rpartition("::")[2])
    return f"{parts.scheme}://{parts.netloc}"


def server_down(error: BaseException) -> bool:
    """Whether a read failed because the server could not be connected to (refused, no such host): its
    other objects would fail alike. Not silence, an error answer, or a connection dropped after it was
    made: those may be this object's alone, and its server's other objects are still asked."""
    if timed_out(error):
        return False
    return any(
        cause_in_chain(error, kind, name) is not None
        for kind, name in (
            (ConnectionRefusedError, "ConnectorError"),  # aiohttp's connect failures
            (socket.gaierror, "EndpointConnectionError"),  # no such host; botocore's
        )
    )


def refused_elsewhere(error: BaseException, url: str) -> bool:
    """Whether the connection that could not be made was to another server than ``url``'s: a redirect's
    target. ``url``'s own server answered (with the redirect), so its other objects are still asked."""
    own = urlsplit(url.rpartition("::")[2])
    if own.scheme not in ("http", "https"):  # s3://bucket/...: the host refused is the endpoint, never the
        return False  # bucket's name, and an object store does not redirect
    connector = cause_in_chain(error, (), "ConnectorError")  # aiohttp's
    host, port = getattr(connector, "host", None), getattr(connector, "port", None)
    if not isinstance(host, str):
        return False
    return (host, port) != (own.hostname, own.port or {"http": 80, "https": 443}.get(own.scheme))


class AnswerNotTheObjectError(FeatxError, OSError):
    """An HTTP answer that is no whole object though it is no error (``204 No Content``, ``206 Partial
    Content`` to a request for all of it, a ``3xx`` without a place to go): its body would otherwise be
    read as the image, and fail as empty or truncated. ``status`` and ``message`` as aiohttp's
    ``ClientResponseError`` has them, so :mod:`featx.inputs.remote` names it as any status."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(f"HTTP {status} ({message})")


def check_whole_answer(handle: Any) -> None:
    """Refuse an HTTP answer whose status is not 200 (or 203, a proxy's copy of it, or a 206 whose range
    is the whole object) once it is known."""
    answer = getattr(handle, "r", None)
    status = getattr(answer, "status", None)
    size = getattr(answer, "content_length", None)
    whole = status == 206 and f"bytes 0-{(size or 0) - 1}/{size}" == answer.headers.get("Content-Range")
    if isinstance(status, int) and status not in (200, 203) and not whole:
        raise AnswerNotTheObjectError(status, str(getattr(handle.r, "reason", "") or ""))


class DeadlineExceeded(FeatxError, TimeoutError):
    """An attempt that outlived its deadline: the server went silent, or answered too slowly."""

    def __init__(self, received: int, seconds: float, timeout: float, expected: int = 0):
        self.received = received
        if expected:  # a range of known length, whose deadline was longer than the timeout
            detail = (
                f"the {expected:,} bytes asked for did not all arrive within {seconds:.0f} s (its deadline: "
                f"{timeout:g} s, and 1 s more per {MIN_RATE >> 20} MB asked for)"
            )
        elif not received:
            detail = f"no answer within {timeout:g} s"
        else:
            detail = (
                f"{received} bytes in {seconds:.0f} s, slower than its deadline ({timeout:g} s, "
                f"and 1 s more per {MIN_RATE >> 20} MB received)"
            )
        super().__init__(detail)


class Budget:
    """The time one read may spend waiting on its server: the timeout, plus a second per ``MIN_RATE``
    bytes received (or announced, for a range of known length). Only time spent waiting counts, so a
    stream whose reader pauses between reads (a shard read as its samples are computed) is not charged
    for the pause; a trickle is, since each byte is a wait."""

    def __init__(self, timeout: float):
        self.timeout, self.waited, self.received = timeout, 0.0, 0

    async def wait(self, awaitable: Any, expected: int = 0) -> Any:
        """``awaitable``'s result, or :class:`DeadlineExceeded` once the budget is spent; bytes count as
        received, and ``expected`` bytes are allowed for ahead."""
        left = self.timeout + (self.received + expected) / MIN_RATE - self.waited
        start, task = time.monotonic(), asyncio.ensure_future(awaitable)
        try:  # the task's own errors (aiohttp's silence time-out among them) stay the task's
            done, _ = await asyncio.wait({task}, timeout=max(left, 0.0))
        except BaseException:
            task.cancel()
            raise
        finally:
            self.waited += time.monotonic() - start
        if not done:
            task.cancel()
            raise DeadlineExceeded(self.received, self.waited, self.timeout, expected)
        result = task.result()
        if isinstance(result, bytes):
            self.received += len(result)
        return result


def async_file_system(url: str) -> tuple[Any, str] | None:
    """``url``'s fsspec file system and path where it streams asynchronously (HTTP, S3), else None (local
    files, tar members: read the ordinary way)."""
    import fsspec.core
    from fsspec.asyn import AsyncFileSystem

    ensure()
    fs, path = fsspec.core.url_to_fs(url)
    if not isinstance(fs, AsyncFileSystem) or type(fs).open_async is AsyncFileSystem.open_async:
        return None
    return fs, path


def read_within_deadline(url: str, limit: int) -> bytes | None:
    """At most ``limit`` bytes (-1: all) of ``url`` in one request, within its :class:`Budget`;
    :class:`DeadlineExceeded` past it. None where the file system cannot stream asynchronously."""
    from fsspec.asyn import sync

    found = async_file_system(url)
    if found is None:
        return None
    fs, path = found
    return sync(fs.loop, _read_within, fs, path, limit, read_timeout())


def http_open_arguments(fs: Any) -> dict[str, Any]:
    """No HEAD request before an HTTP GET (fsspec asks the size first unless told it)."""
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return {"size": 0} if protocols & {"http", "https"} else {}


async def _read_within(fs: Any, path: str, limit: int, timeout: float) -> bytes:
    budget, parts = Budget(timeout), []
    handle = await budget.wait(fs.open_async(path, "rb", **http_open_arguments(fs)))
    try:
        while limit < 0 or budget.received < limit:
            chunk = await budget.wait(
                handle.read(CHUNK if limit < 0 else min(CHUNK, limit - budget.received))
            )
            if not parts:
                check_whole_answer(handle)  # its status is known once the first read is answered
            if not chunk:
                break
            parts.append(chunk)
    finally:
        with contextlib.suppress(Exception):  # closing what failed: the read's own error is the one to report
            await asyncio.wait_for(handle.close(), 1.0)
    return b"".join(parts)


def remember_unreachable(url: str, reason: str) -> None:
    _unreachable[endpoint(url)] = (time.monotonic(), f"{url}: {reason}")


def known_unreachable(url: str) -> str | None:
    """Which read of ``url``'s server failed in the last ``UNREACHABLE_TTL_S`` seconds, and why, if one
    did: the other inputs of that server name the read that failed, not their own."""
    failed = _unreachable.get(endpoint(url))
    if failed is None or time.monotonic() - failed[0] > UNREACHABLE_TTL_S:
        return None
    return failed[1]
