"""MarkdownStore: QUEUE.md as the queue, rewritten atomically under a sidecar lock.

A write locks ``QUEUE.md.lock`` (never the data file), reads and parses the
queue, applies a pure change, writes a temp file in the same folder, fsyncs
it, and ``os.replace``s it over the queue, then fsyncs the folder. Just before
the replace it checks the file still holds what it read: a person may have
saved it from an editor without the lock. Then it re-reads and re-applies,
so their edit survives. Reads take no lock: a replace is atomic.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator import model
from orchestrator.errors import (
    BadInputError,
    BusyError,
    DuplicateIdError,
    LeaseLostError,
    MissingPathError,
    NotFoundError,
    OrchError,
)  # fmt: skip
from orchestrator.model import DEFAULT_POLICY, Claim, Item, Policy, Status
from orchestrator.queuefile import QueueFile
from orchestrator.store.base import Change, Event
from orchestrator.store.leases import Lease, LeaseBook, LeaseFile
from orchestrator.store.spool import Spool
from orchestrator.timeutil import now_iso

if TYPE_CHECKING:
    import random

T = TypeVar("T")
TEMP_MARK = ".orch-tmp-"
MAX_REAPPLY = 20
LOCK_POLL = 0.001


@dataclass
class Outcome:
    """What one edit of the queue did: rows to rewrite and append, the result, its events."""

    changed: list[Item] = field(default_factory=list)
    added: list[Item] = field(default_factory=list)
    result: Any = None
    events: list[Event] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _budgeted(queue: QueueFile) -> bool:
    """A markdown queue keeps an attempt budget only where it has both columns for it."""
    return "attempts" in queue.columns and "max_attempts" in queue.columns


def _backs_off(queue: QueueFile) -> bool:
    return "retry_not_before" in queue.columns


class Batch:
    """The queue as a batch of ops sees it: the parsed rows plus the changes made so far."""

    def __init__(self, queue: QueueFile, book: LeaseBook, now: float) -> None:
        self.queue, self.book, self.now = queue, book, now
        self.changed: dict[str, Item] = {}
        self.events: list[Event] = []
        self.budgeted, self.backs_off = _budgeted(queue), _backs_off(queue)

    def of_status(self, status: Status) -> Iterator[Item]:
        """The items now in ``status``, in queue order, building only those (a claim needs one)."""
        word, queue = status.value, self.queue
        for k, seen in enumerate(queue.status_list):
            changed = self.changed.get(queue.id_list[k])
            if changed is not None:
                if changed.status is status:
                    yield changed
            elif seen == word:
                yield queue.item_at(k)

    def done_ids(self) -> set[str]:
        """Lower-case ids of the DONE items, for dependency checks."""
        queue, done = self.queue, set()
        for k, seen in enumerate(queue.status_list):
            changed = self.changed.get(queue.id_list[k])
            if (changed.status.value if changed is not None else seen) == "DONE":
                done.add(queue.id_list[k].lower())
        return done

    def find(self, item_id: str, where: str) -> Item:
        found = _find(self.queue, item_id, where)
        return self.changed.get(found.id, found)

    def attempts_kept(self, item_id: str) -> int | None:
        """How many attempts the item's row will say it had; None if there is no such row."""
        try:
            return self.find(item_id, "").attempts
        except NotFoundError:
            return None

    def put(self, old: Item, new: Item, actor: str, event: str, data: dict | None = None) -> Item:
        """Record a change (and its event, with ``data``); returns the item as its row will keep it."""
        self.changed[new.id] = new
        self.events.append(_transition_event(old, new, actor, event, data))
        return self.queue.stored(new)


class MarkdownStore:
    """The queue in a markdown file; runtime facts live under ``.orch/`` beside it."""

    name = "markdown"

    def __init__(
        self, path: Path, *, policy: Policy = DEFAULT_POLICY, lock_timeout: float = 30.0, durable: bool = True,
        rng: random.Random | None = None,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.policy = policy
        self.lock_timeout = lock_timeout
        self.durable = durable
        self.rng = rng  # made on the first retry: reads never need one
        self.runtime_dir = self.path.parent / ".orch"
        self.leases = LeaseFile(self.runtime_dir)
        self.spool = Spool(self.runtime_dir / "spool")
        self._last: QueueFile | None = None  # the last queue parsed: the next parse starts from it

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
        return self._parse(self.read_bytes(), confirm=False)

    def _parse(self, data: bytes, *, confirm: bool = True) -> QueueFile:
        """``data`` parsed, starting from the last queue parsed (see ``QueueFile.load``): rows that another
        writer or a person changed since are always read again; only bytes equal to what was checked are not."""
        self._last = QueueFile.load(self.display, data, confirm=confirm, previous=self._last)
        return self._last

    def keeps(self, field_name: str) -> bool:
        """Whether the queue has a column for this item field."""
        return field_name in self.load().columns

    def items(self, status: Status | None = None) -> list[Item]:
        queue = self.load()
        return queue.items if status is None else queue.select(status)

    def counts(self) -> dict[str, int]:
        return self.load().counts()

    def oldest(self, status: Status, limit: int) -> list[Item]:
        return self.load().oldest(status, limit)

    def get(self, item_id: str) -> Item:
        return _find(self.load(), item_id, self.display)

    def events(self, item_id: str) -> list[Event]:
        path = self.runtime_dir / "events.jsonl"
        if not path.exists():
            return []
        found = []
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                record = _json().loads(line)
                if str(record.get("id", "")).lower() == item_id.lower():
                    found.append(_event_from_record(record))
        return found

    # --- operator writes -----------------------------------------------------

    def add(self, items: list[Item], *, actor: str) -> list[Item]:
        def edit(queue: QueueFile, book: LeaseBook | None) -> Outcome:
            taken = {item_id.lower() for item_id in queue.ids()}
            for item in items:
                _check_columns(queue, item)
                if item.id.lower() in taken:
                    raise DuplicateIdError(item.id, self.display)
                taken.add(item.id.lower())
            events = [_event(item.id, actor, "ADDED", "", item.status.value, "") for item in items]
            return Outcome(added=list(items), result=[queue.stored(item) for item in items], events=events)

        return self.transact(edit)

    def upsert(self, items: list[Item], *, actor: str) -> tuple[int, int]:
        """Insert new items and replace existing ones by id, in one write; (added, replaced)."""

        def edit(queue: QueueFile, book: LeaseBook | None) -> Outcome:
            where = {item_id.lower(): k for k, item_id in enumerate(queue.ids())}
            changed, added, events = [], [], []
            for item in items:
                _check_columns(queue, item)
                k = where.get(item.id.lower())
                before = queue.item_at(k).status.value if k is not None else ""
                (changed if k is not None else added).append(item)
                events.append(_event(item.id, actor, "IMPORTED", before, item.status.value, ""))
            return Outcome(changed, added, (len(added), len(changed)), events)

        return self.transact(edit)

    def remove(self, item_ids: list[str], *, actor: str) -> list[Item]:
        """Take rows out of the queue (``orch archive``); returns them as they were."""

        def edit(queue: QueueFile, book: LeaseBook | None) -> Outcome:
            gone = [_find(queue, item_id, self.display) for item_id in item_ids]
            events = [_event(item.id, actor, "ARCHIVED", item.status.value, "", "") for item in gone]
            return Outcome(result=gone, events=events, removed=[item.id for item in gone])

        return self.transact(edit)

    def update(self, item_id: str, change: Change, *, actor: str, event: str) -> Item:
        def edit(queue: QueueFile, book: LeaseBook | None) -> Outcome:
            old = _find(queue, item_id, self.display)
            new = change(old)
            return Outcome([new], result=queue.stored(new), events=[_transition_event(old, new, actor, event)])

        item = self.transact(edit)
        if item.status is not Status.IN_PROGRESS and self.leases.path.exists():
            with self.leases.locked() as book:
                book.drop(item_id)  # a cancelled or replanned item's worker must not heartbeat on
        return item

    def retry(self, item_id: str, *, actor: str, now: float | None = None) -> Item:
        """A queue with the policy's columns (attempts, max_attempts, retry_not_before) follows the
        reliability policy as the databases do: FAILED or timed-out IN_PROGRESS, attempts left, a backoff.
        Otherwise the ops spec's markdown mode: FAILED or BLOCKED back to PENDING (within the budget, if kept)."""
        now = time.time() if now is None else now

        def edit(queue: QueueFile, book: LeaseBook | None) -> Outcome:
            old = _find(queue, item_id, self.display)
            if _budgeted(queue) and _backs_off(queue):
                lease_end = self._lease_end(old.id, book) if book is not None else None
                timed_out = model.is_timed_out(old, lease_end, now)
                new = model.retry_policy(old, now, self.policy, self._jitter(), timed_out=timed_out)
                if book is not None:
                    book.drop(old.id)  # the late worker is fenced off
            else:
                limit = model.budget(old, self.policy) if _budgeted(queue) else None
                new = model.retry_markdown(old, attempt_limit=limit)
            return Outcome([new], result=queue.stored(new), events=[_transition_event(old, new, actor, "RETRIED")])

        return self.transact(edit, leases=self.leases.path.exists())  # no lease book, no leases to look at

    # --- claims and leases (group-committed) --------------------------------------

    def claim(self, owner: str, *, lease: float, now: float | None = None, item_id: str | None = None,
              job: str | None = None) -> Claim | None:  # fmt: skip
        """Take the first runnable item; reaps expired leases first. None when nothing is runnable."""
        answer = self._submit({"op": "claim", "owner": owner, "lease": lease, "now": now, "item_id": item_id,
                               "job": job})  # fmt: skip
        return _claim_from(answer)

    def complete(self, item_id: str, owner: str, *, attempt: int | None = None, notes: str = "",
                 now: float | None = None) -> Item:  # fmt: skip
        return self._finish("complete", item_id, owner, attempt, notes=notes)

    def complete_and_claim(self, item_id: str, owner: str, *, lease: float, attempt: int | None = None,
                           notes: str = "", now: float | None = None,
                           job: str | None = None) -> tuple[Item, Claim | None]:  # fmt: skip
        """Complete, then claim the next item, in one op: one rewrite of QUEUE.md instead of two."""
        op = {"op": "complete_and_claim", "kind": "complete", "item_id": item_id, "owner": owner, "attempt": attempt,
              "notes": notes, "lease": lease, "now": now, "job": job}  # fmt: skip
        answer = self._submit(op)
        return _item_from(answer["done"]), _claim_from(answer["claim"])

    def fail(self, item_id: str, owner: str, *, note: str, attempt: int | None = None, now: float | None = None,
             retryable: bool = True) -> Item:  # fmt: skip
        """End an attempt as failed; retried while the budget (where kept) allows."""
        return self._finish("fail", item_id, owner, attempt, note=note, now=now, retryable=retryable)

    def block(self, item_id: str, owner: str, *, note: str, attempt: int | None = None) -> Item:
        return self._finish("block", item_id, owner, attempt, note=note)

    def release(self, item_id: str, owner: str, *, attempt: int | None = None) -> Item:
        return self._finish("release", item_id, owner, attempt)

    def _finish(self, kind: str, item_id: str, owner: str, attempt: int | None, **details) -> Item:
        op = {"op": "finish", "kind": kind, "item_id": item_id, "owner": owner, "attempt": attempt, **details}
        return _item_from(self._submit(op))

    def reap(self, now: float | None = None) -> list[Item]:
        """Items whose lease ended: retried per the policy, or FAILED when out of attempts."""
        return [_item_from(found) for found in self._submit({"op": "reap", "now": now})]

    def _submit(self, op: dict) -> Any:
        """Queue ``op`` and see it applied; whoever holds the lock applies every queued op in one write."""
        return self.spool.submit({**op, "policy": vars(self.policy)}, self._lock, self._lead, self._try_lock)

    def _lead(self, requests: list[dict]) -> list[dict]:
        """Apply a batch of queued ops with one fsynced rewrite of QUEUE.md (group commit)."""
        with self.leases.locked() as book:
            for tries in range(MAX_REAPPLY):
                data = self.read_bytes()
                queue = self._parse(data)
                if tries:
                    book.reset(self.leases.read())  # a re-apply starts from the book as stored
                batch = Batch(queue, book, time.time())
                answers = [self._apply(batch, op) for op in requests]
                if not batch.changed:
                    return answers
                if "attempts" in queue.columns:
                    book.forget_kept(batch.attempts_kept)
                if book.dirty:
                    self.leases.write(book)  # the lease before the row says IN_PROGRESS (see leases.py)
                if self._replace_if_unchanged(data, queue.render(list(batch.changed.values()))):
                    self._record(batch.events)
                    return answers
            raise BusyError(f"{self.display} kept changing while orch tried to write it; try again")

    def _apply(self, batch: Batch, op: dict) -> dict:
        """One queued op against the batch: its answer, or the error it raised."""
        policy = Policy(**op["policy"])
        try:
            if op["op"] == "claim":
                return {"value": self._claim_in(batch, op, policy)}
            if op["op"] == "reap":
                return {"value": [item.as_dict() for item in self._reap_in(batch, op["now"], policy)]}
            if op["op"] == "complete_and_claim":
                done = self._finish_in(batch, op, policy).as_dict()  # a refused complete raises: nothing claimed
                claim = self._claim_in(batch, {**op, "item_id": None}, policy)
                return {"value": {"done": done, "claim": claim}}
            return {"value": self._finish_in(batch, op, policy).as_dict()}
        except OrchError as error:
            return {"error": type(error).__name__, "message": str(error)}

    def _claim_in(self, batch: Batch, op: dict, policy: Policy) -> dict | None:
        now = batch.now if op["now"] is None else op["now"]
        self._reap_in(batch, now, policy)
        wanted, job = (op["item_id"] or "").lower(), op["job"]
        done: set[str] | None = None  # the DONE ids, gathered only for an item with dependencies
        for item in batch.of_status(Status.PENDING):
            if (wanted and item.id.lower() != wanted) or (job and item.job != job):
                continue
            if item.depends_on and done is None:
                done = batch.done_ids()
            if model.is_runnable(item, done or set(), now, policy, budgeted=batch.budgeted):
                attempt = max(item.attempts, batch.book.attempts.get(item.id, 0)) + 1
                new = replace(model.claim(item, op["owner"], now), attempts=attempt)
                batch.book.hold(item.id, Lease(op["owner"], attempt, now + op["lease"]))
                stored = batch.put(item, new, op["owner"], "CLAIMED", {"attempt": attempt})  # as the databases
                return {"item": stored.as_dict(), "attempt": attempt, "lease_until": now + op["lease"]}
        return None

    def _reap_in(self, batch: Batch, now: float | None, policy: Policy) -> list[Item]:
        now = batch.now if now is None else now
        reaped = []
        for item in list(batch.of_status(Status.IN_PROGRESS)):
            lease = batch.book.held.get(item.id)
            if lease is not None and lease.until <= now:
                note = f"lease_expired:{item.owner or lease.owner}"
                new = model.fail(item, note, now, policy, self._jitter(), budgeted=batch.budgeted,
                                 backoff=batch.backs_off)  # fmt: skip
                batch.book.drop(item.id)
                reaped.append(batch.put(item, new, "orch@reaper", "REAPED"))
        return reaped

    def _finish_in(self, batch: Batch, op: dict, policy: Policy) -> Item:
        item = batch.find(op["item_id"], self.display)
        held = batch.book.held.get(item.id)
        holder = replace(item, owner=item.owner or (held.owner if held else ""))
        attempt = held.attempt if held else item.attempts
        model.check_holder(holder, op["owner"], op["attempt"], attempt)
        kind = op["kind"]
        if kind == "complete":
            new = model.complete(item, attempt, op.get("notes", ""))
        elif kind == "fail":
            now = batch.now if op.get("now") is None else op["now"]
            budgeted = op.get("retryable", True) and batch.budgeted
            new = model.fail(item, op["note"], now, policy, self._jitter(), budgeted=budgeted,
                             backoff=batch.backs_off)  # fmt: skip
        elif kind == "block":
            new = model.block(item, op["note"])
        else:
            new = model.release(item)
        batch.book.drop(item.id)
        return batch.put(item, new, op["owner"], {"complete": "COMPLETED"}.get(kind, kind.upper() + "ED"
                         if kind != "release" else "RELEASED"))  # fmt: skip

    @staticmethod
    def _lease_end(item_id: str, book: LeaseBook) -> float | None:
        """None for a row orch holds no lease on (set IN_PROGRESS by hand): never reaped."""
        lease = book.held.get(item_id)
        return lease.until if lease is not None else None

    def _jitter(self) -> float:
        if self.rng is None:
            import random

            self.rng = random.Random()
        return self.rng.random()

    def lease_ends(self) -> dict[str, float | None]:
        """Every IN_PROGRESS item's lease end (None: unknown, never reaped)."""
        book = self.leases.read()
        return {item_id: self._lease_end(item_id, book) for item_id in self.load().ids_in(Status.IN_PROGRESS)}

    def lease_until(self, item_id: str) -> float | None:
        """When the item's current lease ends (None if it is not leased)."""
        item = self.get(item_id)
        if item.status is not Status.IN_PROGRESS:
            return None
        return self._lease_end(item.id, self.leases.read())

    def heartbeat(self, item_id: str, owner: str, *, lease: float, attempt: int | None = None,
                  now: float | None = None) -> float:  # fmt: skip
        """Extend the lease in ``.orch/``; QUEUE.md is not touched."""
        now = time.time() if now is None else now
        with self.leases.locked() as book:
            held = next((lease for key, lease in book.held.items() if key.lower() == item_id.lower()), None)
            if held is None:
                raise LeaseLostError(item_id, owner, "it holds no lease (reaped, finished or cancelled)")
            if held.owner != owner or (attempt is not None and attempt != held.attempt):
                raise LeaseLostError(item_id, owner, f"attempt {held.attempt} of {held.owner} holds it now")
            key = next(key for key in book.held if key.lower() == item_id.lower())
            book.hold(key, Lease(owner, held.attempt, now + lease))
            return now + lease

    # --- the atomic write -------------------------------------------------------

    def transact(self, edit: Callable[[QueueFile, LeaseBook | None], Outcome], *, leases: bool = False) -> T:
        """Run ``edit`` on the current queue (and lease book) and write its result atomically."""
        with self._lock(), self.leases.locked() if leases else nullcontext() as book:
            self._sweep_temp_files()
            for tries in range(MAX_REAPPLY):
                data = self.read_bytes()
                queue = self._parse(data)
                if book is not None and tries:
                    book.reset(self.leases.read())  # a re-apply starts from the book as stored
                outcome = edit(queue, book)
                if not outcome.changed and not outcome.added and not outcome.removed:
                    return outcome.result
                new_data = queue.render(outcome.changed, outcome.added, outcome.removed)
                if book is not None and book.dirty:
                    # The lease is recorded before the row says IN_PROGRESS, so a crash in
                    # between leaves a lease on a PENDING row (harmless), never the reverse.
                    self.leases.write(book)
                if self._replace_if_unchanged(data, new_data):
                    self._record(outcome.events)
                    return outcome.result
            raise BusyError(f"{self.display} kept changing while orch tried to write it; try again")

    def _lock(self):
        from filelock import FileLock, Timeout

        lock = FileLock(f"{self.path}.lock", timeout=self.lock_timeout)
        try:
            # filelock polls a non-blocking flock; its default 50 ms nap would idle every waiter
            return lock.acquire(poll_interval=LOCK_POLL)  # its proxy releases the lock on leaving a with block
        except Timeout:
            raise BusyError(
                f"{self.display} is locked by another orch process ({self.path}.lock) "
                f"for more than {self.lock_timeout:g}s; try again"
            ) from None

    def _try_lock(self):
        """The queue lock if it is free now, else None (see ``Spool.submit``)."""
        from filelock import FileLock, Timeout

        try:
            return FileLock(f"{self.path}.lock").acquire(timeout=0)
        except Timeout:
            return None

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
        payload = "".join(_json().dumps(event.as_dict(), ensure_ascii=False) + "\n" for event in events)
        fd = os.open(self.runtime_dir / "events.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, payload.encode("utf-8"))
        finally:
            os.close(fd)


def _item_from(data: dict) -> Item:
    """An item from its ``as_dict`` form (how ops answer across processes)."""
    fields = {**data, "status": Status(data["status"]), "depends_on": tuple(data["depends_on"])}
    return Item(**fields)


def _claim_from(answer: dict | None) -> Claim | None:
    """A claim from its answer form (see ``_claim_in``)."""
    if answer is None:
        return None
    return Claim(_item_from(answer["item"]), answer["attempt"], answer["lease_until"])


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
    """The item with this id, ignoring case like every backend."""
    k = queue.index().get(item_id)
    if k is None:
        wanted = item_id.lower()
        k = next((n for n, found in enumerate(queue.ids()) if found.lower() == wanted), None)
    if k is None:
        raise NotFoundError(item_id, where)
    return queue.item_at(k)


def _event(item_id: str, actor: str, event: str, before: str, after: str, note: str) -> Event:
    return Event(now_iso(), item_id, actor, event, before, after, note)


def _transition_event(old: Item, new: Item, actor: str, event: str, data: dict | None = None) -> Event:
    note = new.notes[len(old.notes) :].lstrip("; ") if new.notes.startswith(old.notes) else new.notes
    return Event(now_iso(), new.id, actor, event, old.status.value, new.status.value, note, data or {})


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


def _json():
    """json, imported on first use: reading the queue never needs it."""
    import json

    return json
