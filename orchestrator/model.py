"""Items, their statuses, and the pure transitions between them (the state machine)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import Enum

from orchestrator.errors import BadIdError, BadInputError, NotEligibleError

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NOTE_SEPARATOR = "; "


class Status(str, Enum):
    """The five queue states; values are exactly the words in QUEUE.md."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    BLOCKED = "BLOCKED"
    FAILED = "FAILED"
    DONE = "DONE"

    def __str__(self) -> str:
        return self.value


STATUS_WORDS = tuple(status.value for status in Status)
TERMINAL = frozenset({Status.DONE, Status.FAILED})


@dataclass(frozen=True)
class Item:
    """One queue row. ``extra`` keeps unknown columns by name, in table order."""

    id: str
    status: Status = Status.PENDING
    title: str = ""
    owner: str = ""
    started: str = ""
    attempts: int = 0
    max_attempts: int | None = None
    retry_not_before: int | None = None
    agent: str = ""
    job: str = ""
    depends_on: tuple[str, ...] = ()
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=True, hash=False)

    def note_list(self) -> list[str]:
        """The audit notes, oldest first."""
        return [note for note in self.notes.split(NOTE_SEPARATOR) if note] if self.notes else []

    def as_dict(self) -> dict:
        """A JSON-ready dict: every field, status as its word."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["status"] = self.status.value
        data["depends_on"] = list(self.depends_on)
        data["extra"] = dict(self.extra)
        return data


def id_problem(item_id: str) -> str | None:
    """Why ``item_id`` cannot be an id (it becomes a path and a branch name), or None."""
    if not item_id:
        return "missing id"
    if not ID_PATTERN.fullmatch(item_id):
        return (
            f"bad id '{item_id}': use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if ".." in item_id or item_id.endswith((".", ".lock")):
        return f"bad id '{item_id}': git branch names cannot hold '..' or end in '.' or '.lock'"
    return None


def check_id(item_id: str) -> str:
    """Return ``item_id`` if it is a valid id, else raise ``BadIdError``."""
    problem = id_problem(item_id)
    if problem:
        raise BadIdError(problem)
    return item_id


def append_note(notes: str, note: str) -> str:
    """Notes with one more entry; existing notes are never lost."""
    return f"{notes}{NOTE_SEPARATOR}{note}" if notes else note


def is_terminal(status: Status) -> bool:
    """DONE and FAILED end an item's life unless an operator retries or replans it."""
    return status in TERMINAL


def cancel(item: Item) -> Item:
    """PENDING or IN_PROGRESS becomes BLOCKED with ``cancelled_by_operator``."""
    if is_terminal(item.status):
        raise NotEligibleError(item.id, item.status.value, "cancel", f"it is {item.status.value}")
    if item.status is Status.BLOCKED:
        raise NotEligibleError(item.id, item.status.value, "cancel", "it is BLOCKED already")
    return replace(item, status=Status.BLOCKED, notes=append_note(item.notes, "cancelled_by_operator"))


def replan(item: Item, notes: str) -> Item:
    """IN_PROGRESS pauses as BLOCKED; anything else becomes PENDING with its owner reset."""
    if not notes.strip():
        raise BadInputError("missing notes: say why the item is replanned (--notes)")
    noted = append_note(item.notes, f"replan:{notes}")
    if item.status is Status.IN_PROGRESS:
        return replace(item, status=Status.BLOCKED, notes=noted)
    return replace(item, status=Status.PENDING, notes=noted, owner="", started="")


def retry_count(item: Item) -> int:
    """How many times an operator or the policy has retried this item so far."""
    return sum(1 for note in item.note_list() if note.startswith("retry:"))


def retry_markdown(item: Item) -> Item:
    """Markdown mode: only FAILED or BLOCKED may go back to PENDING."""
    if item.status not in (Status.FAILED, Status.BLOCKED):
        why = f"it is {item.status.value}; only FAILED or BLOCKED items can be retried"
        raise NotEligibleError(item.id, item.status.value, "retry", why)
    note = f"retry:{retry_count(item) + 1}"
    return replace(item, status=Status.PENDING, notes=append_note(item.notes, note), owner="", started="")
