"""Blocking client calls with a deadline the caller keeps, even when the client does not.

librdkafka's `send_offsets_to_transaction` can block forever after a broker restart,
whatever timeout it is given: its group-coordinator request keeps a cached coordinator
that is gone and never checks its own timeout (librdkafka issues 5456 and 5511, open in
2.16). Seen here: the dispatcher thread sat in that call for minutes after the broker
came back, and no run was dispatched until the worker was restarted.

A call that cannot be interrupted can still be abandoned. `Deadline` runs calls on a
helper thread and stops waiting after the deadline; the caller then drops the client
(the stuck call keeps it alive until it returns) and makes a new one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Future[Any], Callable[[], Any]]


class DeadlineExceeded(Exception):
    """A call did not return in time; it still runs on a thread of its own."""


class Deadline:
    """Runs calls one at a time on a daemon helper thread, waiting at most `seconds`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self.abandoned = 0
        """How many calls were given up on (each left a thread behind until it returns)."""

    def call(self, seconds: float, fn: Callable[..., T], *args: Any) -> T:
        return self.wait(self.submit(fn, *args), seconds, getattr(fn, "__name__", repr(fn)))

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Start `fn(*args)` on the helper; `wait` for its result."""
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(
                target=_serve, args=(self._jobs,), name=f"{self.name}-calls", daemon=True
            ).start()
        future: Future[T] = Future()
        self._jobs.put((future, lambda: fn(*args)))
        return future

    def wait(self, future: Future[T], seconds: float, name: str) -> T:
        """The result of the submitted call `name`, waited for at most `seconds` more."""
        try:
            return future.result(seconds)
        except FutureTimeout:
            # The helper is stuck in the call; it ends when the call returns. Later
            # calls get a new helper.
            if self._jobs is not None:
                self._jobs.put(None)
            self._jobs = None
            self.abandoned += 1
            raise DeadlineExceeded(f"{name} did not return within {seconds:g} s") from None


def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while (job := jobs.get()) is not None:
        future, run = job
        try:
            future.set_result(run())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            future.set_exception(exc)
