"""The executor the fleet wheel cache publishes on, off the start-up path.

A `concurrent.futures.Executor` with one worker thread, a daemon: a worker
process never waits for a publish at exit. Abandoning one is harmless, as
everything a publish writes appears whole or not at all (atomic files, store
transactions). Each task starts a moment after it was submitted, so that
repacking does not take CPU from the sibling workers starting at that time.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from functools import partial
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class _Task:
    future: Future[Any]
    call: Callable[[], Any]
    start_at: float  # time.monotonic()


class DelayedDaemonExecutor(Executor):
    """Runs submitted calls one at a time on a daemon thread, each no sooner
    than `delay` seconds after it was submitted. `shutdown` cuts the delays
    short; with `cancel_futures` the calls not yet started never run."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        self._name = name
        self._delay = delay
        self._start_afresh()

    def _start_afresh(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._futures: list[Future[Any]] = []
        self._stopping = threading.Event()
        self._cancel_queued = False
        self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)

    @property
    def thread(self) -> threading.Thread:
        """The worker thread (started by the first `submit`)."""
        return self._thread

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queue `fn(*args, **kwargs)`; raises RuntimeError after `shutdown`
        (or when no thread can be started)."""
        future: Future[T] = Future()
        with self._lock:
            if self._stopping.is_set():
                raise RuntimeError(f"{self._name}: cannot take new work after shutdown")
            if self._thread.ident is None:
                self._thread.start()
            self._futures = [f for f in self._futures if not f.done()]
            self._futures.append(future)
            self._queue.put(_Task(future, partial(fn, *args, **kwargs),
                                  time.monotonic() + self._delay))
        return future

    def wait(self, timeout: float) -> bool:
        """Wait for every call submitted so far; False when one is still
        pending or running at the deadline."""
        with self._lock:
            futures = list(self._futures)
        _done, not_done = concurrent.futures.wait(futures, timeout)
        return not not_done

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            # Before the event: it wakes the worker from a delay, and a call it
            # then finds uncancelled would run.
            self._cancel_queued = self._cancel_queued or cancel_futures
            self._stopping.set()
            futures = list(self._futures)
        if cancel_futures:
            for future in futures:
                future.cancel()  # a running call cannot be: it finishes
        self._queue.put(None)
        if wait and self._thread.ident is not None:
            self._thread.join()

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's worker thread does not exist here,
        and its lock may have been held at the fork. Start with nothing."""
        self._start_afresh()

    def _work(self) -> None:
        while (task := self._queue.get()) is not None:
            self._stopping.wait(max(0.0, task.start_at - time.monotonic()))
            if self._cancel_queued:
                task.future.cancel()
            if not task.future.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            try:
                result = task.call()
            except BaseException as exc:  # handed to whoever looks at the future
                task.future.set_exception(exc)
            else:
                task.future.set_result(result)
