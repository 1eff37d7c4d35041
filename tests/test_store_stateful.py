"""The Store contract as a hypothesis state machine, one per backend, checked against a model of its own.

Rules: add items (with dependencies, in either case, and small budgets);
claim (the first runnable item, or one id) by a few owners; heartbeat,
complete, complete-and-claim-the-next, fail (retryable or not), block and release by the holder (with its
attempt or without), by a stale or future attempt, by another owner, or by
any worker that ever held an item; cancel and replan (``operations``) and
retry by an operator, also of a running item whose lease ran out; reap; and a
simulated clock, moved by fixed steps or to just before, at or just after a
lease or backoff end. Every call that takes ``now`` gets it.

The model is written here from the contract, not with ``model.py``: each
item's status, owner, start, attempts, budget, backoff and notes, its lease
end and its recorded transitions. With ``jitter=0`` every backoff is known, so
after every step the store must hold exactly what the model says (every field
of every item, in order; ``lease_until``; the events' names and states), and
the invariants hold: no IN_PROGRESS item without an owner; attempts never
decrease and never exceed the item's budget (a replan renews a spent one, see
``model.replan_budget``); ``counts()`` agrees with ``items()``. A claim returns
exactly the first item the model finds runnable, or None. A fenced call
(wrong owner or attempt, or after a cancel, reap or replan) raises
``LeaseLostError`` and a refused one ``NotEligibleError``/``MaxAttemptsError``;
either changes nothing: not the items, the leases or the events.

Each run gets a fresh store in a fresh ``tempfile.mkdtemp`` folder, removed in
``teardown``. The settings inherit the profile from ``conftest.py``, so with
``CI`` set the runs are derandomized. ``--hypothesis-show-statistics`` shows
how often each path was taken (the ``event`` calls).
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from orchestrator import operations
from orchestrator.errors import LeaseLostError, MaxAttemptsError, NotEligibleError
from orchestrator.model import Item, Policy, Status
from orchestrator.timeutil import now_iso
from tests.stores import make_store

T0 = 1_800_000_000.0
BACKOFF_BASE, BACKOFF_FACTOR, BACKOFF_CAP = 10, 2, 40
POLICY = Policy(
    max_attempts=3, backoff_base=BACKOFF_BASE, backoff_factor=BACKOFF_FACTOR, backoff_cap=BACKOFF_CAP, jitter=0.0
)
"""No jitter: every backoff, and so every ``retry_not_before``, is known to the model."""

OWNERS = ("w1", "w2", "w3")
MAX_ITEMS = 6
indexes = st.integers(0, 63)
leases = st.sampled_from([10.0, 60.0])
budgets = st.sampled_from([None, 1, 2])
actions = st.sampled_from(["heartbeat", "complete", "fail", "block", "release"])
report_options = {
    "lease": leases,
    "notes": st.sampled_from(["", "all green"]),
    "note": st.sampled_from(["error:boom", "timeout:30s", "intervention:needs a human"]),
    "retryable": st.booleans(),
}

SETTINGS = settings(max_examples=100, stateful_step_count=100, deadline=None)

PENDING, IN_PROGRESS, BLOCKED, FAILED, DONE = (
    Status.PENDING, Status.IN_PROGRESS, Status.BLOCKED, Status.FAILED, Status.DONE,
)  # fmt: skip


def _noted(notes: str, note: str) -> str:
    return f"{notes}; {note}" if notes else note


def _budget(item: Item) -> int:
    return item.max_attempts if item.max_attempts is not None else POLICY.max_attempts


class StoreMachine(RuleBasedStateMachine):
    """One run: a fresh store in a fresh folder, a model, a clock."""

    backend = ""  # each backend's subclass sets it

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix=f"orch-stateful-{self.backend}-"))
        self.store = make_store(self.backend, self.folder, policy=POLICY, rng=random.Random(0))
        self.now = T0
        self.expected: dict[str, Item] = {}  # in queue order
        self.lease_end: dict[str, float] = {}  # IN_PROGRESS items only
        self.history: dict[str, list[tuple[str, str, str]]] = {}  # (event, from, to)
        self.holders: list[tuple[str, str, int]] = []  # every (id, owner, attempt) that ever held an item
        self.seen_attempts: dict[str, int] = {}

    def teardown(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- the model ------------------------------------------------------------------

    def _runnable(self, item: Item) -> bool:
        done = {other.id.lower() for other in self.expected.values() if other.status is DONE}
        return (
            item.status is PENDING
            and all(dep.lower() in done for dep in item.depends_on)
            and (item.retry_not_before is None or item.retry_not_before <= self.now)
            and item.attempts < _budget(item)
        )

    def _retried(self, item: Item, notes: str) -> Item:
        """PENDING again after the backoff for its last attempt, noted ``retry:<n>; retry_not_before=<t>``."""
        n = sum(1 for note in notes.split("; ") if note.startswith("retry:")) + 1
        not_before = int(self.now + min(BACKOFF_CAP, BACKOFF_BASE * BACKOFF_FACTOR ** max(0, item.attempts - 1)))
        notes = _noted(_noted(notes, f"retry:{n}"), f"retry_not_before={not_before}")
        return replace(item, status=PENDING, owner="", started="", notes=notes, retry_not_before=not_before)

    def _failed(self, item: Item, note: str, *, retryable: bool = True) -> Item:
        notes = _noted(item.notes, note)
        if retryable and item.attempts < _budget(item):
            return self._retried(item, notes)
        return replace(item, status=FAILED, notes=notes)

    def _moved(self, new: Item, name: str) -> Item:
        """Record a transition the store must have made, and the event it must have recorded."""
        old = self.expected[new.id]
        self.history[new.id].append((name, old.status.value, new.status.value))
        self.expected[new.id] = new
        if new.status is not IN_PROGRESS:
            self.lease_end.pop(new.id, None)
        return new

    def _reaped(self) -> list[Item]:
        """What a reap (or the reap inside a claim) does at ``now``."""
        expired = [i for i in self.expected.values() if i.status is IN_PROGRESS and self.lease_end[i.id] <= self.now]
        return [self._moved(self._failed(item, f"lease_expired:{item.owner}"), "REAPED") for item in expired]

    def _holds(self, item_id: str, owner: str, attempt: int | None) -> bool:
        item = self.expected[item_id]
        return item.status is IN_PROGRESS and item.owner == owner and attempt in (None, item.attempts)

    def _pick(self, k: int) -> Item:
        items = list(self.expected.values())
        return items[k % len(items)]

    def _caller(self, k: int, who: str) -> tuple[str, str, int | None]:
        """An (id, owner, attempt) to call with: mostly a running item's holder, sometimes not."""
        running = [item for item in self.expected.values() if item.status is IN_PROGRESS]
        item = running[k % len(running)] if running and who.startswith("holder") else self._pick(k)
        owner = item.owner or OWNERS[k % len(OWNERS)]
        attempt = {"holder": item.attempts, "holder, no attempt": None, "stale attempt": item.attempts - 1,
                   "next attempt": item.attempts + 1, "another owner": item.attempts}[who]  # fmt: skip
        if who == "another owner":
            owner = next(other for other in OWNERS if other != item.owner)
        return item.id, owner, attempt

    # --- checks -----------------------------------------------------------------------

    def _snapshot(self) -> tuple:
        items = self.store.items()
        leases_now = {item.id: self.store.lease_until(item.id) for item in items}
        events = {item.id: len(self.store.events(item.id)) for item in items}
        return [item.as_dict() for item in items], leases_now, events

    def _refused(self, error: type[Exception], call: Callable[[], object]) -> None:
        """``call`` raises ``error`` and writes nothing."""
        before = self._snapshot()
        with pytest.raises(error):
            call()
        assert self._snapshot() == before

    @invariant()
    def the_store_holds_what_the_model_says(self) -> None:
        items = self.store.items()
        assert [item.as_dict() for item in items] == [item.as_dict() for item in self.expected.values()]
        by_status = Counter(item.status.value for item in items)
        assert self.store.counts() == {status.value: by_status[status.value] for status in Status}
        for item in items:
            assert item.status is not IN_PROGRESS or item.owner, item
            assert self.seen_attempts.get(item.id, 0) <= item.attempts <= _budget(item), item
            self.seen_attempts[item.id] = item.attempts
            assert self.store.lease_until(item.id) == self.lease_end.get(item.id), item
            assert [(e.event, e.from_status, e.to_status) for e in self.store.events(item.id)] == self.history[item.id]

    # --- rules: items and the clock -------------------------------------------------------

    def _add(self, dep: int | None, upper: bool, max_attempts: int | None) -> None:
        item_id = f"t{len(self.expected)}"
        depends_on = ()
        if dep is not None and self.expected:
            target = self._pick(dep).id
            depends_on = (target.upper() if upper else target,)
        item = Item(item_id, title=f"task {item_id}", depends_on=depends_on, max_attempts=max_attempts)
        assert self.store.add([item], actor="test") == [item]
        self.expected[item_id] = item
        self.history[item_id] = [("ADDED", "", "PENDING")]

    @initialize(budgets=st.lists(budgets, min_size=1, max_size=3))
    def some_items(self, budgets: list[int | None]) -> None:
        for max_attempts in budgets:
            self._add(None, False, max_attempts)

    @rule(dep=st.none() | indexes, upper=st.booleans(), max_attempts=budgets)
    def add(self, dep: int | None, upper: bool, max_attempts: int | None) -> None:
        if len(self.expected) < MAX_ITEMS:  # not a precondition: those make hypothesis redraw rules
            self._add(dep, upper, max_attempts)

    @rule(seconds=st.sampled_from([1, 5, 10, 30, 60, 120]))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds

    @rule(k=indexes, deadline=st.sampled_from(["lease end", "backoff end"]), offset=st.sampled_from([-1, 0, 0, 1]))
    def time_runs_to_a_deadline(self, k: int, deadline: str, offset: int) -> None:
        """The clock moves to just before, at or just after a lease's or a backoff's end (if one is ahead)."""
        if deadline == "lease end":
            ends = sorted(self.lease_end.values())
        else:
            ends = sorted(item.retry_not_before for item in self.expected.values() if item.retry_not_before)
        ahead = [end + offset for end in ends if end + offset > self.now]
        if ahead:
            event(f"time: to a {deadline}{f' {offset:+d}s' if offset else ''}")
            self.now = ahead[k % len(ahead)]

    # --- rules: claims and the reaper -------------------------------------------------------

    def _claim(self, owner: str, lease: float, item_id: str | None) -> None:
        runnable = self._runnable_after_reaping(item_id)
        got = self.store.claim(owner, lease=lease, now=self.now, item_id=item_id)
        event(f"claim{' one id' if item_id else ''}: {'taken' if runnable else 'nothing runnable'}")
        self._claimed(got, runnable, owner, lease)

    def _runnable_after_reaping(self, item_id: str | None) -> list[Item]:
        """What a claim (for one id, or any) may take at ``now``: it reaps expired leases first."""
        if self._reaped():
            event("claim: reaped an expired lease first")
        runnable = [item for item in self.expected.values() if self._runnable(item)]
        return [item for item in runnable if item_id in (None, item.id)]

    def _claimed(self, got, runnable: list[Item], owner: str, lease: float) -> None:
        """The store's claim took exactly the first runnable item (or nothing, if none was)."""
        if not runnable:
            assert got is None
            return
        assert got is not None, f"nothing claimed, though {[item.id for item in runnable]} are runnable"
        first = runnable[0]
        new = replace(first, status=IN_PROGRESS, owner=owner, started=now_iso(self.now), attempts=first.attempts + 1,
                      retry_not_before=None)  # fmt: skip
        assert (got.item, got.attempt, got.lease_until) == (new, first.attempts + 1, self.now + lease)
        self._moved(new, "CLAIMED")
        self.lease_end[new.id] = self.now + lease
        self.holders.append((new.id, owner, new.attempts))

    @rule(owner=st.sampled_from(OWNERS), lease=leases, k=st.none() | st.none() | indexes)
    def claim(self, owner: str, lease: float, k: int | None) -> None:
        """Claim the first runnable item, or (given ``k``) one id."""
        self._claim(owner, lease, None if k is None else self._pick(k).id)

    @rule()
    def reap(self) -> None:
        reaped = self._reaped()
        event(f"reap: {'some' if reaped else 'none'} reaped")
        assert [item.as_dict() for item in self.store.reap(now=self.now)] == [item.as_dict() for item in reaped]

    # --- rules: what a worker reports ---------------------------------------------------------

    def _report(self, action: str, item_id: str, owner: str, attempt: int | None, **options) -> None:
        store = self.store
        calls = {
            "heartbeat": lambda: store.heartbeat(item_id, owner, lease=options["lease"], attempt=attempt, now=self.now),
            "complete": lambda: store.complete(item_id, owner, attempt=attempt, notes=options["notes"], now=self.now),
            "fail": lambda: store.fail(item_id, owner, note=options["note"], attempt=attempt, now=self.now,
                                       retryable=options["retryable"]),
            "block": lambda: store.block(item_id, owner, note=options["note"], attempt=attempt),
            "release": lambda: store.release(item_id, owner, attempt=attempt),
        }  # fmt: skip
        if not self._holds(item_id, owner, attempt):
            event(f"{action}: fenced")
            self._refused(LeaseLostError, calls[action])
            return
        event(f"{action}: by the holder")
        item = self.expected[item_id]
        if action == "heartbeat":
            assert calls[action]() == self.now + options["lease"]
            self.lease_end[item_id] = self.now + options["lease"]
            return
        if action == "complete":
            notes = _noted(item.notes, f"done:{item.attempts}")
            new = replace(item, status=DONE, notes=_noted(notes, options["notes"]) if options["notes"] else notes)
            name = "COMPLETED"
        elif action == "fail":
            new, name = self._failed(item, options["note"], retryable=options["retryable"]), "FAILED"
        elif action == "block":
            new, name = replace(item, status=BLOCKED, notes=_noted(item.notes, options["note"])), "BLOCKED"
        else:
            new, name = replace(item, status=PENDING, owner="", started=""), "RELEASED"
        assert calls[action]() == new
        self._moved(new, name)

    @rule(action=actions, k=indexes, with_attempt=st.booleans(), **report_options)
    def the_holder_reports(self, action: str, k: int, with_attempt: bool, **options) -> None:
        """The holder of a running item (if any) reports, with its attempt or without."""
        self._report(action, *self._caller(k, "holder" if with_attempt else "holder, no attempt"), **options)

    @rule(action=actions, k=indexes, who=st.sampled_from(["stale attempt", "next attempt", "another owner"]),
          **report_options)  # fmt: skip
    def someone_else_reports(self, action: str, k: int, who: str, **options) -> None:
        """A worker with the wrong attempt or the wrong name, about any item: always fenced."""
        self._report(action, *self._caller(k, who), **options)

    @rule(k=indexes, who=st.sampled_from(["holder", "holder", "holder, no attempt", "stale attempt", "another owner"]),
          lease=leases, notes=st.sampled_from(["", "all green"]))  # fmt: skip
    def a_worker_completes_and_claims_the_next(self, k: int, who: str, lease: float, notes: str) -> None:
        """``complete_and_claim``: the complete (fenced as ever), then a claim, as one step; refused, neither."""
        item_id, owner, attempt = self._caller(k, who)
        store = self.store

        def call():
            return store.complete_and_claim(item_id, owner, lease=lease, attempt=attempt, notes=notes, now=self.now)

        if not self._holds(item_id, owner, attempt):
            event("complete_and_claim: fenced")
            self._refused(LeaseLostError, call)
            return
        item = self.expected[item_id]
        done = replace(item, status=DONE, notes=_noted(_noted(item.notes, f"done:{item.attempts}"), notes)
                       if notes else _noted(item.notes, f"done:{item.attempts}"))  # fmt: skip
        self._moved(done, "COMPLETED")
        runnable = self._runnable_after_reaping(None)
        event(f"complete_and_claim: completed, then {'took one' if runnable else 'nothing runnable'}")
        got_done, got = call()
        assert got_done == done
        self._claimed(got, runnable, owner, lease)

    @rule(k=indexes, action=actions)
    def a_past_holder_reports(self, k: int, action: str) -> None:
        """Any worker that ever held an item reports late: fenced unless it still holds that attempt."""
        if not self.holders:
            return
        item_id, owner, attempt = self.holders[k % len(self.holders)]
        options = {"lease": 60.0, "notes": "late", "note": "error:late", "retryable": True}
        self._report(action, item_id, owner, attempt, **options)

    # --- rules: what an operator does ---------------------------------------------------------

    @rule(action=st.sampled_from(["cancel", "replan", "retry"]), k=indexes, stuck=st.booleans(),
          why=st.sampled_from(["smaller steps", "split | it", "ünïcode 中文"]))  # fmt: skip
    def an_operator_acts(self, action: str, k: int, stuck: bool, why: str) -> None:
        """Cancel, replan or retry any item, or (``stuck``) one that is running, BLOCKED or FAILED."""
        stuck_items = [item for item in self.expected.values() if item.status in (IN_PROGRESS, BLOCKED, FAILED)]
        item = stuck_items[k % len(stuck_items)] if stuck and stuck_items else self._pick(k)
        if action == "cancel":
            self._cancel(item)
        elif action == "replan":
            self._replan(item, why)
        else:
            self._retry(item)

    @rule(k=indexes)
    def an_operator_retries_an_expired_lease(self, k: int) -> None:
        """Retry a running item whose lease ended before the reaper saw it: allowed, and its worker fenced off."""
        expired = [i for i in self.expected.values() if i.status is IN_PROGRESS and self.lease_end[i.id] <= self.now]
        if expired:
            self._retry(expired[k % len(expired)])

    def _cancel(self, item: Item) -> None:
        event(f"cancel: {item.status.value}")
        if item.status not in (PENDING, IN_PROGRESS):
            self._refused(NotEligibleError, lambda: operations.cancel(self.store, item.id))
            return
        new = replace(item, status=BLOCKED, notes=_noted(item.notes, "cancelled_by_operator"))
        assert operations.cancel(self.store, item.id) == new
        self._moved(new, "CANCELED")

    def _replan(self, item: Item, why: str) -> None:
        notes = _noted(item.notes, f"replan:{why}")
        if item.status is IN_PROGRESS:
            new = replace(item, status=BLOCKED, notes=notes)
        else:
            new = replace(item, status=PENDING, owner="", started="", notes=notes)
            if item.attempts >= _budget(item):  # a spent budget is renewed
                event("replan: budget renewed")
                new = replace(new, max_attempts=item.attempts + POLICY.max_attempts)
        assert operations.replan(self.store, item.id, why) == new
        self._moved(new, "REPLANNED")

    def _retry(self, item: Item) -> None:
        call = lambda: self.store.retry(item.id, actor="test", now=self.now)  # noqa: E731
        # the reliability policy on every backend (the markdown queue here has the policy's columns):
        # FAILED or a timed-out IN_PROGRESS, then a backoff
        timed_out = item.status is IN_PROGRESS and self.lease_end[item.id] <= self.now
        eligible = item.status is FAILED or timed_out
        if not eligible:
            event("retry: not eligible")
            self._refused(NotEligibleError, call)
            return
        if item.attempts >= _budget(item):
            event("retry: no attempts left")
            self._refused(MaxAttemptsError, call)
            return
        event(f"retry: {item.status.value} retried")
        new = self._retried(item, item.notes)
        assert call() == new
        self._moved(new, "RETRIED")


def _machine_for(backend: str) -> type[StoreMachine]:
    return type(f"{backend.capitalize()}StoreMachine", (StoreMachine,), {"backend": backend})


MarkdownStoreMachine = _machine_for("markdown")
SqliteStoreMachine = _machine_for("sqlite")

TestMarkdownStore = MarkdownStoreMachine.TestCase
TestMarkdownStore.settings = SETTINGS
TestSqliteStore = SqliteStoreMachine.TestCase
TestSqliteStore.settings = SETTINGS
