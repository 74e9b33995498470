"""Reading one input by URL, and what a failed read means for it.

A URL on HTTP or S3 is read in one request per attempt, within its deadline (:mod:`featx.inputs.timeouts`);
a read that timed out or was cut mid-answer is tried once more. What the server said decides the error's
kind: an object that is not there is ``missing``; a refused or dropped connection, silence, a cut answer,
a 5xx or a 429 are ``unreachable`` (asking again later may work, so the job exits 1 and says to run the
same command again); a redirect loop and other 4xx answers are ``unreadable``, named as such.
"""

from __future__ import annotations

from featx.errors import ImageError
from featx.inputs import sources, tables, timeouts
from featx.inputs.bounds import refuse_over_max_bytes

__all__ = ["read_error", "read_url"]


def read_url(url: str, index: int, max_bytes: int) -> bytes:
    """An fsspec URL or tar member's bytes; failures become this input's error, naming shard and member.
    A read that timed out or was cut mid-answer is tried again once (``timeouts.ATTEMPTS``); a server
    that refused a connection in the last half minute is not asked again
    (``timeouts.known_unreachable``)."""
    earlier = timeouts.known_unreachable(url)
    if earlier is not None:
        raise ImageError(
            index, url, "unreachable", f"not asked again: its server failed moments ago, reading {earlier}"
        )
    for attempt in range(1, timeouts.ATTEMPTS + 1):
        try:
            whole_object = not url.startswith((sources.TAR_PREFIX, tables.ROW_PREFIX))
            content = timeouts.read_within_deadline(url, max_bytes + 1) if whole_object else None
            if content is None:
                content = sources.read_bytes(url, max_bytes + 1)
            break
        except Exception as error:  # each fsspec backend raises its own (OSError, botocore's, aiohttp's...)
            if attempt < timeouts.ATTEMPTS and (timeouts.timed_out(error) or _cut(error)):
                continue
            failure = read_error(index, url, error)
            if timeouts.server_down(error) and not timeouts.refused_elsewhere(error, url):
                timeouts.remember_unreachable(url, failure.reason)
            raise failure from None
    refuse_over_max_bytes(len(content), index, url, max_bytes)
    return content


def read_error(index: int, url: str, error: BaseException, attempts: int = timeouts.ATTEMPTS) -> ImageError:
    """What an fsspec, tar or table read failure means for the input it read, after ``attempts`` tries (a
    shard streamed by the batch job is read once). fsspec's HTTP file system reports a refused or
    timed-out connection as FileNotFoundError; the cause in its chain says the server was never asked, so
    that input is unreachable, not missing."""
    tried = f"{attempts} attempts" if attempts > 1 else "1 attempt"
    if timeouts.timed_out(error):
        deadline = timeouts.cause_in_chain(error, timeouts.DeadlineExceeded, "DeadlineExceeded")
        detail = deadline or f"no answer within {timeouts.read_timeout():g} s"
        return ImageError(
            index,
            url,
            "unreachable",
            f"timed out: {detail}, {tried} (raise it with --read-timeout or "
            f"{timeouts.VARIABLE} if the server is only slow)",
        )
    encoded = timeouts.cause_in_chain(error, (), "ContentEncodingError")
    if encoded is not None:
        said = " ".join(str(getattr(encoded, "message", "") or encoded).split())
        return ImageError(index, url, "unreadable", f"the server's answer cannot be decoded ({said})")
    garbled = _not_http(error)
    if garbled is not None:
        return ImageError(index, url, "unreadable", f"the server's answer is not HTTP ({garbled})")
    answered = _http_answer(error)
    if answered is not None:
        return answered.error(index, url)
    if _cut(error):
        return ImageError(
            index,
            url,
            "unreachable",
            f"the server closed the connection mid-answer, {tried}",
        )
    dropped = timeouts.cause_in_chain(error, (ConnectionResetError, BrokenPipeError), "ServerDisconnected")
    if dropped is not None and not timeouts.server_down(error):
        return ImageError(
            index,
            url,
            "unreachable",
            f"the server dropped the connection ({type(dropped).__name__}: {dropped})",
        )
    cause = timeouts.cause_in_chain(error, ConnectionError, "ConnectionError")  # botocore's too
    if cause is not None:
        return ImageError(index, url, "unreachable", f"cannot connect ({type(cause).__name__}: {cause})")
    if isinstance(error, FileNotFoundError):
        what = (
            "the table's cell is empty (null)"
            if url.startswith(tables.ROW_PREFIX)
            else "no such object or member"
        )
        return ImageError(index, url, "missing", what)
    if isinstance(error, PermissionError):
        return ImageError(index, url, "permission", f"access denied ({error}); check the credentials")
    return ImageError(index, url, "unreadable", f"{type(error).__name__}: {error}")


def _cut(error: BaseException) -> bool:
    """An answer cut short: the server closed the connection before the length it announced (aiohttp's
    payload error, which also reports a body its Content-Encoding cannot decode: not a cut)."""
    encoded = timeouts.cause_in_chain(error, (), "ContentEncodingError")
    return encoded is None and timeouts.cause_in_chain(error, (), "PayloadError") is not None


class _Answer:
    """An HTTP answer that is no file: a status (aiohttp's, or botocore's) or a redirect loop."""

    def __init__(self, status: int, reason: str, redirects: int | None = None):
        self.status, self.reason, self.redirects = status, reason, redirects

    def error(self, index: int, url: str) -> ImageError:
        said = f"HTTP {self.status}{f' ({self.reason})' if self.reason else ''}"
        if self.redirects is not None:
            return ImageError(
                index,
                url,
                "unreadable",
                f"a redirect loop: still redirected after {self.redirects} redirects",
            )
        if self.status >= 500 or self.status == 429:
            kind = "a server failure" if self.status >= 500 else "the server's rate limit"
            return ImageError(
                index, url, "unreachable", f"the server answered {said}: {kind}, not a missing file"
            )
        if self.status in (404, 410):
            return ImageError(index, url, "missing", f"the server answered {said}")
        if self.status < 400:
            return ImageError(index, url, "unreadable", f"the server answered {said}, not the whole object")
        if self.status in (401, 403):
            return ImageError(index, url, "permission", f"the server answered {said}; check the credentials")
        return ImageError(index, url, "unreadable", f"the server answered {said}")


def _not_http(error: BaseException) -> str | None:
    """What aiohttp could not parse as an HTTP answer (a port that speaks another protocol, an answer
    past its end), in one line. aiohttp reports it as a ``ClientResponseError`` of status 400, which would
    read as the server's own "HTTP 400"; the parser's error (an ``HttpProcessingError``) is its cause.
    A body cut short or badly encoded (a ``PayloadEncodingError``) is no such thing: None."""
    cause: BaseException | None = error
    while cause is not None:
        kinds = {kind.__name__ for kind in type(cause).__mro__}
        if "PayloadEncodingError" in kinds:
            return None
        if "HttpProcessingError" in kinds:
            said = " ".join(str(getattr(cause, "message", "") or cause).split())
            return said or type(cause).__name__
        cause = cause.__cause__ or cause.__context__
    return None


def _http_answer(error: BaseException) -> _Answer | None:
    """The server's answer behind ``error``, if it was an HTTP status featx does not read as a file."""
    loop = timeouts.cause_in_chain(error, (), "TooManyRedirects")
    if loop is not None:
        return _Answer(getattr(loop, "status", 0), "", len(getattr(loop, "history", ())))
    answered = timeouts.cause_in_chain(error, timeouts.AnswerNotTheObjectError, "ResponseError")  # aiohttp's
    if answered is not None and isinstance(getattr(answered, "status", None), int):
        return _Answer(answered.status, str(getattr(answered, "message", "") or ""))
    botocore = timeouts.cause_in_chain(error, (), "ClientError")
    metadata = getattr(botocore, "response", {}) or {}
    status = (
        metadata.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(metadata, dict) else None
    )
    if isinstance(status, int) and (status >= 500 or status == 429):
        return _Answer(status, str(metadata.get("Error", {}).get("Code", "")))
    return None
