"""Live updates for ``orch serve``: watch the queue, the runs and the logs; tell the streams.

A watcher thread takes a cheap fingerprint of each source several times a
second (file sizes and times; for a database, its newest event), and every
change becomes a numbered event kept in a short ring. A reconnecting page
sends ``Last-Event-ID`` and gets what it missed, or ``resync`` when that is
older than the ring.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RING = 512


@dataclass(frozen=True)
class Change:
    """One numbered change: which sources moved (``queue``, ``runs``, ``job:<id>``)."""

    seq: int
    what: tuple[str, ...]


def file_marks(paths: list[Path]) -> tuple:
    marks = []
    for path in paths:
        try:
            stat = path.stat()
            marks.append((str(path), stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            marks.append((str(path), 0, 0))
    return tuple(marks)


class Hub:
    """Fingerprints sources on a thread; streams wait on it for changes."""

    def __init__(self, sources: Callable[[], dict[str, object]], interval: float = 0.2) -> None:
        self.sources, self.interval = sources, interval
        self.seq = 0
        self.ring: deque[Change] = deque(maxlen=RING)
        self.condition = threading.Condition()
        self.stopping = threading.Event()
        self.last: dict[str, object] = {}
        self.thread = threading.Thread(target=self._watch, name="orch-serve-watch", daemon=True)

    def start(self) -> None:
        self.last = self._safe_sources()
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        with self.condition:
            self.condition.notify_all()

    def _safe_sources(self) -> dict[str, object]:
        try:
            return self.sources()
        except Exception:  # a half-written file or a busy database: look again next time
            return self.last

    def _watch(self) -> None:
        while not self.stopping.wait(self.interval):
            current = self._safe_sources()
            moved = tuple(
                sorted(key for key in set(current) | set(self.last) if current.get(key) != self.last.get(key))
            )
            self.last = current
            if moved:
                self.publish(moved)

    def publish(self, what: tuple[str, ...]) -> Change:
        with self.condition:
            self.seq += 1
            change = Change(self.seq, what)
            self.ring.append(change)
            self.condition.notify_all()
            return change

    def since(self, seq: int) -> list[Change] | None:
        """Changes after ``seq``; None when ``seq`` is older than the ring (the page must resync)."""
        with self.condition:
            if seq > self.seq or (self.ring and seq < self.ring[0].seq - 1):
                return None  # from another server process (a restart), or older than the ring
            return [change for change in self.ring if change.seq > seq]

    def wait(self, seq: int, timeout: float) -> list[Change] | None:
        """Block until there is a change after ``seq`` (or ``timeout``)."""
        with self.condition:
            self.condition.wait_for(lambda: self.seq > seq or self.stopping.is_set(), timeout)
        return self.since(seq)
