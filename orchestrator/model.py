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
CANCELLABLE = frozenset({Status.PENDING, Status.IN_PROGRESS})


@dataclass(slots=True)
class Item:
    """One queue row. ``extra`` keeps unknown columns by name, in table order.

    Treat it as immutable: transitions return new items with ``replace``. (Not
    ``frozen``: building 10,000 frozen items costs four times as long.)
    """

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
    extra: dict[str, str] = field(default_factory=dict)

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
        return f"bad id '{item_id}': use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
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


def retry_markdown(item: Item, *, attempt_limit: int | None = None) -> Item:
    """Markdown mode: only FAILED or BLOCKED may go back to PENDING (within a budget, if kept)."""
    from orchestrator.errors import MaxAttemptsError

    if item.status not in (Status.FAILED, Status.BLOCKED):
        why = f"it is {item.status.value}; only FAILED or BLOCKED items can be retried"
        raise NotEligibleError(item.id, item.status.value, "retry", why)
    if attempt_limit is not None and item.attempts >= attempt_limit:
        raise MaxAttemptsError(item.id, item.attempts, attempt_limit)
    note = f"retry:{retry_count(item) + 1}"
    return replace(item, status=Status.PENDING, notes=append_note(item.notes, note), owner="", started="")


# --- claims, leases and the retry policy (Store contract) ---------------------------


@dataclass(frozen=True)
class Policy:
    """The reliability policy: attempt budget and exponential backoff with jitter."""

    max_attempts: int = 3
    backoff_base: float = 60.0
    backoff_factor: float = 2.0
    backoff_cap: float = 3600.0
    jitter: float = 0.1


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Claim:
    """What a worker holds after a claim: the item, its attempt number and lease end."""

    item: Item
    attempt: int
    lease_until: float

    @property
    def item_id(self) -> str:
        return self.item.id

    def as_dict(self) -> dict:
        return {"id": self.item.id, "attempt": self.attempt, "lease_until": self.lease_until,
                "owner": self.item.owner, "item": self.item.as_dict()}  # fmt: skip


def budget(item: Item, policy: Policy) -> int:
    """How many attempts this item may use in all."""
    return item.max_attempts if item.max_attempts is not None else policy.max_attempts


def backoff_delay(attempt: int, policy: Policy, unit: float) -> float:
    """Seconds to wait before attempt ``attempt + 1``; ``unit`` in [0, 1) picks the jitter."""
    delay = min(policy.backoff_cap, policy.backoff_base * policy.backoff_factor ** max(0, attempt - 1))
    return delay * (1 + policy.jitter * (2 * unit - 1))


def is_runnable(item: Item, done: set[str], now: float, policy: Policy, *, budgeted: bool = True) -> bool:
    """PENDING, every dependency DONE (``done`` holds lower-case ids), backoff passed, attempts left."""
    return (
        item.status is Status.PENDING
        and all(dep.lower() in done for dep in item.depends_on)
        and (item.retry_not_before is None or item.retry_not_before <= now)
        and (not budgeted or item.attempts < budget(item, policy))
    )


def claim(item: Item, owner: str, now: float) -> Item:
    """A runnable item taken by ``owner``: IN_PROGRESS, started now, one more attempt counted."""
    from orchestrator.timeutil import now_iso

    return replace(item, status=Status.IN_PROGRESS, owner=owner, started=now_iso(now),
                   attempts=item.attempts + 1, retry_not_before=None)  # fmt: skip


def check_holder(item: Item, owner: str, attempt: int | None, held_attempt: int) -> None:
    """Fencing: refuse a call from a worker that no longer holds the item."""
    from orchestrator.errors import LeaseLostError

    if item.status is not Status.IN_PROGRESS:
        raise LeaseLostError(item.id, owner, f"it is {item.status.value} now")
    if item.owner != owner:
        raise LeaseLostError(item.id, owner, f"it is held by {item.owner or 'nobody'}")
    if attempt is not None and attempt != held_attempt:
        raise LeaseLostError(item.id, owner, f"attempt {attempt} ended; attempt {held_attempt} holds it now")


def complete(item: Item, attempt: int, notes: str = "") -> Item:
    """A finished attempt: DONE with ``done:<attempt>`` (and the worker's notes)."""
    noted = append_note(item.notes, f"done:{attempt}")
    return replace(item, status=Status.DONE, notes=append_note(noted, notes) if notes.strip() else noted)


def schedule_retry(item: Item, now: float, policy: Policy, unit: float, *, backoff: bool = True) -> Item:
    """Back to PENDING, noted ``retry:<n>``; with ``backoff``, also ``retry_not_before=<epoch>``."""
    notes = append_note(item.notes, f"retry:{retry_count(item) + 1}")
    not_before = None
    if backoff:
        not_before = int(now + backoff_delay(item.attempts, policy, unit))
        notes = append_note(notes, f"retry_not_before={not_before}")
    return replace(item, status=Status.PENDING, owner="", started="", notes=notes, retry_not_before=not_before)


def fail(
    item: Item, note: str, now: float, policy: Policy, unit: float, *, budgeted: bool = True, backoff: bool = True
) -> Item:
    """A failed attempt: retried (after a backoff) while attempts are left, else FAILED.

    Without a ``budgeted`` store (a markdown queue with no attempts columns)
    nothing counts attempts, so a failure is final until an operator retries.
    """
    failed = replace(item, status=Status.FAILED, notes=append_note(item.notes, note))
    if budgeted and item.attempts < budget(item, policy):
        return schedule_retry(failed, now, policy, unit, backoff=backoff)
    return failed


def block(item: Item, note: str) -> Item:
    """An attempt that needs a human: BLOCKED with the reason noted."""
    return replace(item, status=Status.BLOCKED, notes=append_note(item.notes, note))


def is_timed_out(item: Item, lease_until: float | None, now: float) -> bool:
    """An IN_PROGRESS item whose lease has ended: its worker is presumed dead."""
    return item.status is Status.IN_PROGRESS and lease_until is not None and lease_until <= now


def retry_policy(item: Item, now: float, policy: Policy, unit: float, *, timed_out: bool) -> Item:
    """Operator retry under the reliability policy (SQLite mode)."""
    from orchestrator.errors import MaxAttemptsError

    if not (item.status is Status.FAILED or (item.status is Status.IN_PROGRESS and timed_out)):
        why = f"it is {item.status.value}; only FAILED or timed-out IN_PROGRESS items can be retried"
        raise NotEligibleError(item.id, item.status.value, "retry", why)
    if item.attempts >= budget(item, policy):
        raise MaxAttemptsError(item.id, item.attempts, budget(item, policy))
    return schedule_retry(item, now, policy, unit)


def release(item: Item) -> Item:
    """A claim given back unfinished (a runner shutting down): PENDING again, attempt kept."""
    return replace(item, status=Status.PENDING, owner="", started="")


def replan_budget(before: Item, after: Item, policy: Policy) -> Item:
    """A replanned item that had used up its attempts gets a fresh budget."""
    if after.status is Status.PENDING and before.attempts >= budget(before, policy):
        return replace(after, max_attempts=before.attempts + policy.max_attempts)
    return after
