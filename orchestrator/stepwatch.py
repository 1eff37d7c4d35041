"""Noticing that an item was taken away while one of its steps runs inside the runner.

An agent process is registered under ``.orch/procs/``, so ``orch cancel`` in
another shell stops it at once. But an HTTP model's request runs on a thread
of the runner, and an agent CLI waiting out a rate limit has no process
between its tries: nothing another process could signal, and heartbeats come
only every ``lease / 3``. So while a step runs the runner asks the store every
``CANCEL_POLL`` seconds whether the item is still its own, and sets the step's
cancel event (which shuts a request's socket, ends a wait, stops a process
group) when it is not. One ask is one row read: the queue file read and
compared with the last parse (markdown), or one indexed row (SQLite,
PostgreSQL).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

CANCEL_POLL = 0.5


@contextmanager
def cancel_when(taken: Callable[[], bool], cancel: threading.Event, interval: float = CANCEL_POLL) -> Iterator[None]:
    """While the block runs, ask ``taken()`` every ``interval`` seconds and set ``cancel`` once it says so."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval) and not cancel.is_set():
            if taken() and not done.is_set():
                cancel.set()
                return

    thread = threading.Thread(target=watch, name=f"{threading.current_thread().name}-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()  # not joined: an ask still in flight must not hold up the step's end (its answer is dropped)
