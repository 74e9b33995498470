"""A job's stages overlapped: decoding on one thread, issuing (resize, crop, network, copy out) on another,
committing on a third (the cache's group writer), with a bounded number of batches in flight.

Why: run one after the other on one thread, a GPU job decodes, then runs the network, then decodes again,
and each waits for the other (ResNet-50 on an H200: 13,661 images/s decoding and 13,869 forward cap a
serial job near 6,900). Overlapped, the job runs at its slowest stage.

The stages are plain callables, so the same scheduling runs the real job (CPU or GPU) and stand-ins that
only sleep (``benchmarks/gpu_overlap.py``, the tests). On a GPU each thread has its own stream and a batch
passes from the decoding stream to the compute stream through an event, so no thread waits for the device;
on a CPU the :class:`Lanes` are no-ops. The host waits only where a bound is full: ``depth`` batches
waiting for each stage (and the group writer's own bound).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

_END = object()


class Lanes:
    """The streams of a job's decoding and issuing threads and the events that order them; no-ops off a GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda" and torch.cuda.is_available()
        self._decoding = torch.cuda.Stream(device) if self.cuda else None
        self._compute = torch.cuda.Stream(device) if self.cuda else None

    def decoding(self) -> AbstractContextManager[Any]:
        """Run the decoding stage on its own stream."""
        return torch.cuda.stream(self._decoding) if self.cuda else nullcontext()

    def computing(self) -> AbstractContextManager[Any]:
        """Run the issuing stage on the compute stream."""
        return torch.cuda.stream(self._compute) if self.cuda else nullcontext()

    def record(self) -> torch.cuda.Event | None:
        """An event after the work queued so far on this thread's stream."""
        if not self.cuda:
            return None
        event = torch.cuda.Event()
        event.record()
        return event

    def wait(self, event: torch.cuda.Event | None) -> None:
        """Order this thread's stream after ``event``, on the device: the host does not wait."""
        if event is not None:
            torch.cuda.current_stream().wait_event(event)


class Pipeline:
    """``put`` items from the job's thread; each goes through ``decode`` on the decoding thread, then
    ``issue`` on the issuing thread, in order. ``put`` blocks only while ``depth`` items wait for decoding;
    a stage's error is raised in the job's thread by the next ``put`` or ``drain``. After :meth:`stop`,
    items not yet decoded are dropped (``fail_fast``: nothing after the first failure is computed).

    Use as a context manager; the threads start at the first ``put`` (after a DataLoader has forked its
    workers from a process with one thread)."""

    def __init__(
        self,
        decode: Callable[[Any], Any],
        issue: Callable[[Any], None],
        lanes: Lanes | None = None,
        depth: int = 2,
    ):
        self._decode, self._issue = decode, issue
        self._lanes = lanes or Lanes(torch.device("cpu"))
        self._todo: queue.Queue = queue.Queue(maxsize=depth)
        self._ready: queue.Queue = queue.Queue(maxsize=depth)
        self._put = self._done = 0
        self._stopped = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._threads = [
            threading.Thread(target=self._decoding, name="featx-decode", daemon=True),
            threading.Thread(target=self._issuing, name="featx-issue", daemon=True),
        ]

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self.stop()
        self.close()

    def put(self, item: Any) -> None:
        if self._threads[0].ident is None:
            for thread in self._threads:
                thread.start()
        self.check()
        with self._changed:
            self._put += 1
        self._todo.put(item)

    def stop(self) -> None:
        """Drop what is not decoded yet."""
        self._stopped = True

    @property
    def stopped(self) -> bool:
        return self._stopped

    def drain(self) -> None:
        """Wait until every item put so far has been issued (or dropped), then raise a stage's error."""
        with self._changed:
            while self._done < self._put:
                self._changed.wait()
        self.check()

    def close(self) -> None:
        """Let what was put finish (or drop it after :meth:`stop`), then end the threads."""
        if self._threads[0].ident is None:
            return
        self._todo.put(_END)
        for thread in self._threads:
            thread.join()

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def _finished(self, n: int = 1) -> None:
        with self._changed:
            self._done += n
            self._changed.notify_all()

    def _failed(self, error: BaseException) -> None:
        with self._changed:
            self._error = self._error or error
            self._stopped = True
            self._changed.notify_all()

    def _decoding(self) -> None:
        with self._lanes.decoding():
            while (item := self._todo.get()) is not _END:
                if self._stopped:
                    self._finished()
                    continue
                try:
                    decoded = self._decode(item)
                except BaseException as error:  # handed to the job's thread, which raises it
                    self._failed(error)
                    self._finished()
                    continue
                self._ready.put((decoded, self._lanes.record()))
        self._ready.put(_END)

    def _issuing(self) -> None:
        failed = False  # what was decoded before a decoding error is still issued; after its own, nothing
        with self._lanes.computing():
            while (ready := self._ready.get()) is not _END:
                decoded, event = ready
                if not failed:
                    try:
                        self._lanes.wait(event)
                        self._issue(decoded)
                    except BaseException as error:
                        failed = True
                        self._failed(error)
                del decoded, ready
                self._finished()
