"""Every network read has a timeout: a server that accepts and never answers, or an object store that
stalls mid-read, becomes one input's error row (``unreachable``, "timed out") instead of a job that hangs.

Without this, fsspec's HTTP file system waits for aiohttp's five-minute default and s3fs for botocore's
minute per attempt, several attempts over. The bound is ``FEATX_READ_TIMEOUT`` seconds (default 60), or
``featx extract --read-timeout``: the longest wait for a connection, and the longest silence while reading.
It is set in fsspec's configuration (``fsspec.config.conf``) for ``http``/``https`` and ``s3`` (where the
user's own settings for those keys win) before a process's first remote read; worker processes inherit
the variable.

A server that cannot be reached, or went silent, is remembered for ``UNREACHABLE_TTL_S`` seconds by the
process that tried it: the next reads from it fail at once (kind ``unreachable``) instead of each waiting
through its own timeouts and retries, so a job whose object store died ends in seconds, listing what it
could not read.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any
from urllib.parse import urlsplit

from featx.errors import ParameterError

DEFAULT_READ_TIMEOUT_S = 60.0
VARIABLE = "FEATX_READ_TIMEOUT"
ATTEMPTS = 2  # of a whole read that timed out: a stall is often one slow connection, not a dead server
UNREACHABLE_TTL_S = 30.0
_unreachable: dict[str, tuple[float, str]] = {}  # endpoint -> (when it failed, what failed and why)
_configured = False
_placed: dict[tuple[str, str], Any] = {}  # (protocol, key) -> the value featx put in fsspec's configuration


def read_timeout() -> float:
    """The configured bound in seconds; a value that is not a positive number is refused by name."""
    text = os.environ.get(VARIABLE, "")
    if not text:
        return DEFAULT_READ_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise ParameterError(
            f"{VARIABLE}={text!r} is not a number of seconds above 0; unset it or use e.g. 60"
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


def cause_in_chain(error: BaseException, kind: type[BaseException], name_part: str) -> BaseException | None:
    """The first exception in ``error``'s chain of causes that is a ``kind`` or whose class name holds
    ``name_part`` (botocore's and aiohttp's own classes derive from neither builtin)."""
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


def remember_unreachable(url: str, reason: str) -> None:
    _unreachable[endpoint(url)] = (time.monotonic(), f"{url}: {reason}")


def known_unreachable(url: str) -> str | None:
    """Which read of ``url``'s server failed in the last ``UNREACHABLE_TTL_S`` seconds, and why, if one
    did: the other inputs of that server name the read that failed, not their own."""
    failed = _unreachable.get(endpoint(url))
    if failed is None or time.monotonic() - failed[0] > UNREACHABLE_TTL_S:
        return None
    return failed[1]
