"""MarkdownStore: QUEUE.md as the queue, rewritten atomically under a sidecar lock.

A write locks ``QUEUE.md.lock`` (never the data file), reads and parses the
queue, applies a pure change, writes a temp file in the same folder, fsyncs
it, and ``os.replace``s it over the queue, then fsyncs the folder. Just before
the replace it checks the file still holds what it read: a person may have
saved it from an editor without the lock. Then it re-reads and re-applies,
so their edit survives. Reads take no lock: a replace is atomic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from orchestrator.errors import BadInputError, BusyError, DuplicateIdError, MissingPathError, NotFoundError
from orchestrator.model import Item, Status
from orchestrator.queuefile import QueueFile
from orchestrator.store.base import Change, Event
from orchestrator.timeutil import now_iso

T = TypeVar("T")
TEMP_MARK = ".orch-tmp-"
MAX_REAPPLY = 20


class MarkdownStore:
    """The queue in a markdown file; runtime facts live under ``.orch/`` beside it."""

    name = "markdown"

    def __init__(self, path: Path, *, lock_timeout: float = 30.0, durable: bool = True) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self.durable = durable
        self.runtime_dir = self.path.parent / ".orch"
        self._last: QueueFile | None = None  # the last queue read, reused while the bytes match

    @property
    def display(self) -> str:
        return str(self.path)

    # --- reads --------------------------------------------------------------

    def read_bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise MissingPathError(f"{self.display}: no such queue file (pass --queue or run orch init)") from None
        except IsADirectoryError:
            raise MissingPathError(f"{self.display}: is a folder, not a queue file") from None

    def load(self) -> QueueFile:
        """The parsed queue, for reading; raises ``QueueFormatError`` if it breaks a house rule."""
        data = self.read_bytes()
        if self._last is None or self._last.data != data:
            self._last = QueueFile.load(self.display, data, confirm=False)
        return self._last

    def items(self, status: Status | None = None) -> list[Item]:
        queue = self.load()
        return queue.items if status is None else queue.select(status)

    def counts(self) -> dict[str, int]:
        return self.load().counts()

    def oldest(self, status: Status, limit: int) -> list[Item]:
        return self.load().oldest(status, limit)

    def get(self, item_id: str) -> Item:
        for item in self.items():
            if item.id == item_id:
                return item
        raise NotFoundError(item_id, self.display)

    def events(self, item_id: str) -> list[Event]:
        path = self.runtime_dir / "events.jsonl"
        if not path.exists():
            return []
        found = []
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                if record.get("id") == item_id:
                    found.append(_event_from_record(record))
        return found

    # --- writes -------------------------------------------------------------

    def add(self, items: list[Item], *, actor: str) -> list[Item]:
        def edit(queue: QueueFile) -> tuple[bytes, list[Item], list[Event]]:
            taken = {item_id.lower() for item_id in queue.ids()}
            for item in items:
                _check_columns(queue, item)
                if item.id.lower() in taken:
                    raise DuplicateIdError(item.id, self.display)
                taken.add(item.id.lower())
            events = [_event(item.id, actor, "ADDED", "", item.status.value, "") for item in items]
            return queue.render([], items), [queue.stored(item) for item in items], events

        return self.transact(edit)

    def update(self, item_id: str, change: Change, *, actor: str, event: str) -> Item:
        def edit(queue: QueueFile) -> tuple[bytes, Item, list[Event]]:
            old = _find(queue, item_id, self.display)
            new = change(old)
            note = new.notes[len(old.notes) :].lstrip("; ") if new.notes.startswith(old.notes) else new.notes
            record = _event(item_id, actor, event, old.status.value, new.status.value, note)
            return queue.render([new]), queue.stored(new), [record]

        return self.transact(edit)

    def update_many(self, change: Callable[[QueueFile], tuple[list[Item], list[Event]]]) -> list[Item]:
        """Apply a change that picks its own items (claims, reaping) in one atomic write."""

        def edit(queue: QueueFile) -> tuple[bytes, list[Item], list[Event]]:
            changed, events = change(queue)
            return queue.render(changed), changed, events

        return self.transact(edit)

    def transact(self, edit: Callable[[QueueFile], tuple[bytes, T, list[Event]]]) -> T:
        """Run ``edit`` on the current queue and write its result atomically."""
        with self._lock():
            self._sweep_temp_files()
            for _ in range(MAX_REAPPLY):
                data = self.read_bytes()
                new_data, result, events = edit(QueueFile.load(self.display, data))
                if new_data == data:
                    return result
                if self._replace_if_unchanged(data, new_data):
                    self._record(events)
                    return result
            raise BusyError(f"{self.display} kept changing while orch tried to write it; try again")

    def _lock(self):
        from filelock import FileLock, Timeout

        lock = FileLock(f"{self.path}.lock", timeout=self.lock_timeout)
        try:
            return lock.acquire()  # its proxy releases the lock on leaving a with block
        except Timeout:
            raise BusyError(
                f"{self.display} is locked by another orch process ({self.path}.lock) "
                f"for more than {self.lock_timeout:g}s; try again"
            ) from None

    def _replace_if_unchanged(self, expected: bytes, new_data: bytes) -> bool:
        target = self.path.resolve()  # replace the file a symlink points to, not the link
        temp = target.parent / f".{target.name}{TEMP_MARK}{os.getpid()}-{os.urandom(4).hex()}"
        try:
            self._write_temp(temp, new_data)
            if self.read_bytes() != expected:
                return False  # saved by someone else meanwhile: re-read and re-apply
            os.replace(temp, target)
        finally:
            if temp.exists():
                temp.unlink()
        if self.durable:
            _fsync_folder(target.parent)
        return True

    def _write_temp(self, temp: Path, data: bytes) -> None:
        mode = self.path.stat().st_mode & 0o7777
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not narrow the queue's permissions
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _sweep_temp_files(self) -> None:
        """Temp files left by a writer that died holding the lock; only a lock holder writes them."""
        target = self.path.resolve()
        for stale in target.parent.glob(f".{target.name}{TEMP_MARK}*"):
            stale.unlink(missing_ok=True)

    def _record(self, events: list[Event]) -> None:
        if not events:
            return
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        payload = "".join(json.dumps(event.as_dict(), ensure_ascii=False) + "\n" for event in events)
        fd = os.open(self.runtime_dir / "events.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, payload.encode("utf-8"))
        finally:
            os.close(fd)


def _check_columns(queue: QueueFile, item: Item) -> None:
    """A new item's values must each have a column to live in."""
    missing = queue.missing_columns(item, Item(item.id)) + [name for name in item.extra if name not in queue.columns]
    if missing:
        line = queue.header.line.number
        raise BadInputError(
            f"{queue.path}:{line}: no column named {missing[0]!r} "
            f"(columns: {', '.join(queue.columns)}); add the column to the header first"
        )


def _find(queue: QueueFile, item_id: str, where: str) -> Item:
    k = queue.index().get(item_id)
    if k is None:
        raise NotFoundError(item_id, where)
    return queue.item_at(k)


def _event(item_id: str, actor: str, event: str, before: str, after: str, note: str) -> Event:
    return Event(now_iso(), item_id, actor, event, before, after, note)


def _event_from_record(record: dict) -> Event:
    known = {"time", "id", "actor", "event", "from", "to", "note"}
    data = {k: v for k, v in record.items() if k not in known}
    return Event(
        record["time"], record["id"], record["actor"], record["event"],
        record["from"], record["to"], record.get("note", ""), data,
    )  # fmt: skip


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
