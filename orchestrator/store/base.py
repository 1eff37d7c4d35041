"""The Store contract every backend keeps; ``tests/test_store_contract.py`` holds them to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.model import Item, Status


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
    """What every backend must do. Each method is atomic on its own."""

    name: str
    """``"markdown"`` or ``"sqlite"``, shown to operators."""

    def items(self, status: Status | None = None) -> list[Item]:
        """Every item in queue order, or only those in ``status``.

        :raises QueueFormatError: the queue is malformed (markdown).
        """
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
