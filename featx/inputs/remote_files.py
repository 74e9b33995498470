"""Remote shards (HTTP, S3) opened as files whose every read is bounded (:class:`timeouts.Budget`): a
shard streamed front to back by the batch job, or indexed and read by range for its members. fsspec's
own files only time silence, so a server trickling a byte at a time could hold a job for as long as it
liked; here a shard read fails like any read that timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tarfile
from typing import Any

from featx.inputs import timeouts


def open_shard(url: str, *, streamed: bool) -> io.IOBase | None:
    """``url`` opened for reading within deadlines; None where it is no remote file that streams
    asynchronously (a local shard: open it the ordinary way). ``streamed``: one request read front to
    back, within one budget for the whole shard, handing over what has arrived; else seekable and
    buffered, each range one request within its own budget."""
    found = timeouts.async_file_system(url)
    if found is None:
        return None
    fs, path = found
    if streamed:
        return _ArrivedReader(_BoundedFile(fs, path, streamed))
    return io.BufferedReader(_BoundedFile(fs, path, streamed), buffer_size=timeouts.CHUNK)


class _ArrivedReader(io.IOBase):
    """A streamed shard whose ``read(n)`` returns the bytes that have arrived (a tar block at least, unless
    the shard ends), not ``n``: tarfile's stream mode asks for a whole record (10 KB) at a time, and
    ``io.BufferedReader`` would wait for all of it, so samples that arrived whole before a server went
    silent or dropped the connection were lost with the rest, and the error named a member read whole.
    The server is read a ``timeouts.CHUNK`` at most at a time, once what arrived before is used."""

    def __init__(self, raw: _BoundedFile):
        super().__init__()
        self._raw, self._arrived, self._used = raw, b"", 0
        self._failure: OSError | None = None  # raised at the next read, once what arrived is handed over

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._take(len(self._arrived))]
            while self._fill():
                parts.append(self._take(len(self._arrived)))
            return b"".join(parts)
        data = self._take(size)
        try:
            while len(data) < min(size, tarfile.BLOCKSIZE) and self._fill():  # a block tells a compression
                data += self._take(size - len(data))
        except OSError as failure:
            if not data:
                raise
            self._failure = failure  # the bytes that arrived first: they may end a member
        return data

    def close(self) -> None:
        self._raw.close()
        super().close()

    def _take(self, size: int) -> bytes:
        data = self._arrived[self._used : self._used + size]
        self._used += len(data)
        return data

    def _fill(self) -> bool:
        """One read of the server (what has arrived, up to a chunk); False at the shard's end."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        self._arrived, self._used = self._raw.read(timeouts.CHUNK) or b"", 0
        return bool(self._arrived)


class _BoundedFile(io.RawIOBase):
    def __init__(self, fs: Any, path: str, streamed: bool):
        super().__init__()
        self._fs, self._path, self._streamed = fs, path, streamed
        self._timeout = timeouts.read_timeout()
        self._budget = timeouts.Budget(self._timeout)  # a stream's, for all its reads (a range has its own)
        self._stream: Any = None
        self._position = 0
        self._size: int | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return not self._streamed

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self._streamed:
            raise io.UnsupportedOperation("a streamed shard is read front to back")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: None}[whence]
        if base is None:
            base = self._call(self._sized, timeouts.Budget(self._timeout))
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: Any) -> int:
        data = self._call(self._read, len(buffer))
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        if self._stream is not None and not self.closed:
            stream, self._stream = self._stream, None
            with contextlib.suppress(Exception):  # closing what failed: the read's own error is reported
                self._call(_closed, stream)
        super().close()

    def _call(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` run on fsspec's event loop (fsspec raises its own FSTimeoutError from a
        DeadlineExceeded, which stays in the chain of causes). A failure is an OSError, as any file's
        read's: the HTTP client's own (aiohttp's cut answer or 5xx, botocore's) derive from no builtin
        error, and a shard's reader catches what a file raises."""
        from fsspec.asyn import sync

        try:
            return sync(self._fs.loop, function, *args)
        except OSError:
            raise
        except Exception as error:  # the server's answer, in its client's class: kept as the cause
            raise OSError(f"{type(error).__name__}: {error}") from error

    async def _read(self, n: int) -> bytes:
        if self._streamed:
            if self._stream is None:
                opened = self._fs.open_async(self._path, "rb", **timeouts.http_open_arguments(self._fs))
                self._stream = await self._budget.wait(opened)
                data = await self._budget.wait(self._stream.read(n))
                timeouts.check_whole_answer(self._stream)  # a 204, a 3xx without a place to go: no shard
                return data
            return await self._budget.wait(self._stream.read(n))
        budget = timeouts.Budget(self._timeout)  # one request, one budget: a member's failure is its own
        end = min(self._position + n, await self._sized(budget))
        if end <= self._position:
            return b""
        wanted = end - self._position
        if timeouts.http_open_arguments(self._fs):  # HTTP: the answer's status and range checked first
            ranged = _http_range(self._fs, self._path, self._position, end)
        else:
            ranged = self._fs._cat_file(self._path, start=self._position, end=end)
        data = await budget.wait(ranged, wanted)
        if len(data) != wanted:
            raise OSError(_no_ranges(f"{len(data):,} bytes for the {wanted:,} at offset {self._position:,}"))
        return data

    async def _sized(self, budget: timeouts.Budget) -> int:
        if self._size is None:
            size = (await budget.wait(self._fs._info(self._path))).get("size")
            if size is None:
                raise OSError(
                    "the server does not say the shard's size, so its members cannot be read by range; "
                    "give the shard to the batch job, which streams it front to back"
                )
            self._size = int(size)
        return self._size


async def _closed(stream: Any) -> None:
    await asyncio.wait_for(stream.close(), 1.0)


async def _http_range(fs: Any, path: str, start: int, end: int) -> bytes:
    """Bytes ``start:end`` of an HTTP file, refused before its body is read where the server answers
    anything but that range (fsspec's ``_cat_file`` would read a whole shard into memory to find out)."""
    session = await fs.set_session()
    headers = {**fs.kwargs.get("headers", {}), "Range": f"bytes={start}-{end - 1}"}
    options = {key: value for key, value in fs.kwargs.items() if key != "headers"}
    async with session.get(fs.encode_url(path), headers=headers, **options) as answer:
        fs._raise_not_found_for_status(answer, path)
        given = answer.headers.get("Content-Range", "")
        ranged = answer.status == 206 and given.startswith(f"bytes {start}-")
        whole = answer.status == 200 and start == 0 and (answer.content_length or end + 1) <= end
        if not (ranged or whole):  # the whole file, where it is no longer than what was asked for, will do
            raise OSError(_no_ranges(f"HTTP {answer.status} {given or 'without a Content-Range'}"))
        parts, received = [], 0
        while received <= end - start:  # a byte more than asked for, at most: a longer answer is refused
            part = await answer.content.read(end - start + 1 - received)
            if not part:
                break
            parts.append(part)
            received += len(part)
        return b"".join(parts)


def _no_ranges(answered: str) -> str:
    return (
        f"the server answered {answered}: it does not serve byte ranges; give the shard to the batch job, "
        "which streams it front to back"
    )
