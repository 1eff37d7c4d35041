"""The Store contract every backend keeps; ``tests/test_store_contract.py`` holds them to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.model import Claim, Item, Policy, Status


@dataclass(frozen=True)
class Event:
    """One recorded transition of one item, for ``show`` and the audit trail."""

    time: str
    item_id: str
    actor: str
    event: str
    from_status: str
    to_status: str
    note: str = ""
    data: dict = field(default_factory=dict, compare=False, hash=False)

    def as_dict(self) -> dict:
        return {
            "time": self.time, "id": self.item_id, "actor": self.actor, "event": self.event,
            "from": self.from_status, "to": self.to_status, "note": self.note, **self.data,
        }  # fmt: skip


Change = Callable[[Item], Item]


class Store(Protocol):
    """What every backend must do. Each method is atomic on its own.

    Times (``now``) are epoch seconds and default to the current time; tests
    pass them to move the clock. ``attempt`` arguments fence a worker: a call
    from an attempt that no longer holds the item raises ``LeaseLostError``.
    """

    name: str
    """``"markdown"`` or ``"sqlite"``, shown to operators."""

    policy: Policy
    """The reliability policy: attempt budget and backoff."""

    def items(self, status: Status | None = None) -> list[Item]:
        """Every item in queue order, or only those in ``status``.

        :raises QueueFormatError: the queue is malformed (markdown).
        """
        ...

    def keeps(self, field_name: str) -> bool:
        """Whether this store can hold that item field (a markdown queue needs its column)."""
        ...

    def counts(self) -> dict[str, int]:
        """How many items are in each status, every status present."""
        ...

    def oldest(self, status: Status, limit: int) -> list[Item]:
        """Up to ``limit`` items in ``status``, earliest ``started`` first; unstarted ones last."""
        ...

    def get(self, item_id: str) -> Item:
        """The item with this id.

        :raises NotFoundError: no such item.
        """
        ...

    def add(self, items: list[Item], *, actor: str) -> list[Item]:
        """Append new items at the end of the queue, all or none.

        :raises DuplicateIdError: an id is taken already.
        """
        ...

    def update(self, item_id: str, change: Change, *, actor: str, event: str) -> Item:
        """Apply the pure ``change`` to one item atomically; return the stored result.

        ``change`` may raise (``NotEligibleError`` ...); then nothing is written.
        """
        ...

    def events(self, item_id: str) -> list[Event]:
        """The item's recorded transitions, oldest first."""
        ...

    def upsert(self, items: list[Item], *, actor: str) -> tuple[int, int]:
        """Insert new items and replace existing ones by id, all at once; returns (added, replaced)."""
        ...

    def remove(self, item_ids: list[str], *, actor: str) -> list[Item]:
        """Take items out of the queue, all at once (archiving); returns them as they were."""
        ...

    def retry(self, item_id: str, *, actor: str, now: float | None = None) -> Item:
        """An operator's retry, by the store's mode.

        Markdown: FAILED or BLOCKED become PENDING (within the attempt budget
        where the queue keeps one). SQLite: the reliability policy, FAILED or
        timed-out IN_PROGRESS only, attempts left, ``retry_not_before`` set.

        :raises NotEligibleError: not in a retryable state.
        :raises MaxAttemptsError: the attempt budget is used up.
        """
        ...

    def claim(
        self,
        owner: str,
        *,
        lease: float,
        now: float | None = None,
        item_id: str | None = None,
        job: str | None = None,
    ) -> Claim | None:
        """Atomically take the first runnable item (optionally this id or job) for ``lease`` seconds.

        Runnable: PENDING, every ``depends_on`` DONE, ``retry_not_before``
        passed, attempts left. The item becomes IN_PROGRESS with owner and
        start time, and the attempt is counted now. Expired leases are reaped
        first. Two claimers never get the same item. None if nothing is runnable.
        """
        ...

    def heartbeat(
        self, item_id: str, owner: str, *, lease: float, attempt: int | None = None, now: float | None = None
    ) -> float:
        """Extend the lease by ``lease`` seconds from ``now``; returns the new end.

        :raises LeaseLostError: ``owner``/``attempt`` no longer holds the item.
        """
        ...

    def complete(
        self, item_id: str, owner: str, *, attempt: int | None = None, notes: str = "", now: float | None = None
    ) -> Item:
        """DONE, noted ``done:<attempt>``. :raises LeaseLostError: see ``heartbeat``."""
        ...

    def complete_and_claim(
        self,
        item_id: str,
        owner: str,
        *,
        lease: float,
        attempt: int | None = None,
        notes: str = "",
        now: float | None = None,
        job: str | None = None,
    ) -> tuple[Item, Claim | None]:
        """``complete`` this item, then ``claim`` the next for ``owner``, as one atomic write.

        A worker's loop in one transaction (one commit, one rewrite of
        QUEUE.md) instead of two. The complete is fenced exactly as
        ``complete``; if it is refused nothing is claimed and nothing is
        written. The claim sees the completion (a dependent of this item may
        be the next) and follows ``claim``'s rules, ``job`` included.

        :returns: the completed item, and the new claim or None if nothing is runnable.
        :raises LeaseLostError: see ``heartbeat``.
        """
        ...

    def fail(
        self,
        item_id: str,
        owner: str,
        *,
        note: str,
        attempt: int | None = None,
        now: float | None = None,
        retryable: bool = True,
    ) -> Item:
        """A failed attempt, noted ``note``: PENDING after a backoff while attempts are left, else FAILED.

        :raises LeaseLostError: see ``heartbeat``.
        """
        ...

    def block(self, item_id: str, owner: str, *, note: str, attempt: int | None = None) -> Item:
        """An attempt that needs a human: BLOCKED, noted ``note``. :raises LeaseLostError:"""
        ...

    def release(self, item_id: str, owner: str, *, attempt: int | None = None) -> Item:
        """Give a claim back unfinished: PENDING, the attempt still counted. :raises LeaseLostError:"""
        ...

    def reap(self, now: float | None = None) -> list[Item]:
        """IN_PROGRESS items whose lease ended, retried or FAILED by the policy; only those."""
        ...

    def lease_ends(self) -> dict[str, float | None]:
        """Every IN_PROGRESS item's lease end (None where it is not known)."""
        ...

    def lease_until(self, item_id: str) -> float | None:
        """When the item's lease ends; None if it is not IN_PROGRESS."""
        ...
