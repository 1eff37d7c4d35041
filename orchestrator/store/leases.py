"""The markdown store's runtime leases: who holds which item until when.

Leases and heartbeats change often, so they live in ``.orch/leases.json``
(untracked) and never rewrite QUEUE.md. The file is replaced atomically under
``.orch/leases.lock``, and a claim records its lease before QUEUE.md says
IN_PROGRESS. An IN_PROGRESS row with no lease was set by hand (or the file
was lost): it is never reaped and never shown as stale; a person decides.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Lease:
    """One held item: its owner, attempt number and lease end (epoch seconds)."""

    owner: str
    attempt: int
    until: float


@dataclass
class LeaseBook:
    """Every held lease, and the last attempt number given to each item."""

    held: dict[str, Lease] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    dirty: bool = False

    def hold(self, item_id: str, lease: Lease) -> None:
        self.held[item_id] = lease
        self.attempts[item_id] = max(self.attempts.get(item_id, 0), lease.attempt)
        self.dirty = True

    def drop(self, item_id: str) -> None:
        if self.held.pop(item_id, None) is not None:
            self.dirty = True

    def reset(self, stored: LeaseBook) -> None:
        """Start again from the book as stored (a write that is applied again)."""
        self.held, self.attempts, self.dirty = stored.held, stored.attempts, False

    def forget_kept(self, kept: Callable[[str], int | None]) -> None:
        """Drop the attempt numbers the queue keeps anyway, so the book stays small.

        ``kept(item_id)`` is the attempt count the item's row keeps (None: no
        such row). An entry goes when orch holds no lease on the item and the
        row counts at least as many attempts: the next claim's number, one
        more than the larger of the two, is the same without it. A row that
        says fewer (edited by hand, or a write lost in a crash) keeps its entry.
        """
        for item_id in [key for key in self.attempts if key not in self.held]:
            count = kept(item_id)
            if count is None or count >= self.attempts[item_id]:
                del self.attempts[item_id]
                self.dirty = True

    def as_json(self) -> str:
        held = {key: vars(lease) for key, lease in self.held.items()}
        return _json().dumps({"held": held, "attempts": self.attempts}, sort_keys=True)


class LeaseFile:
    """``.orch/leases.json`` and its lock."""

    def __init__(self, runtime_dir: Path) -> None:
        self.path = runtime_dir / "leases.json"
        self.lock_path = runtime_dir / "leases.lock"

    def read(self) -> LeaseBook:
        try:
            data = _json().loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return LeaseBook()
        except ValueError:
            return LeaseBook()  # a torn or hand-broken file: leases fall back to start times
        held = {key: Lease(**value) for key, value in data.get("held", {}).items()}
        return LeaseBook(held, {key: int(value) for key, value in data.get("attempts", {}).items()})

    def write(self, book: LeaseBook) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".leases.{os.getpid()}.tmp")
        temp.write_text(book.as_json(), encoding="utf-8")
        os.replace(temp, self.path)
        book.dirty = False

    @contextmanager
    def locked(self) -> Iterator[LeaseBook]:
        """The current book under the lock; written back on leaving if it changed."""
        from filelock import FileLock

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.lock_path), timeout=60).acquire(poll_interval=0.001):
            book = self.read()
            yield book
            if book.dirty:
                self.write(book)


def _json():
    """json, imported on first use: reading the queue never needs it."""
    import json

    return json
