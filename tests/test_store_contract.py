"""The Store contract: every test here runs on each backend (cf. huey's StorageTests)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import model, operations
from orchestrator.errors import DuplicateIdError, LeaseLostError, NotEligibleError, NotFoundError
from orchestrator.model import Item, Policy, Status
from tests.stores import ALL_BACKENDS, make_store

T0 = 1_800_000_000.0
LEASE = 60.0


@pytest.fixture(params=ALL_BACKENDS)
def store(request, tmp_path):
    """Each contract test runs once per backend (the property test reuses it: unique ids per example)."""
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgres" else None
    made = make_store(request.param, tmp_path, dsn, policy=Policy(max_attempts=3, backoff_base=10, jitter=0.1))
    yield made
    if hasattr(made, "close"):
        made.close()


def add(store, *ids: str, **fields) -> None:
    store.add([Item(item_id, title=f"task {item_id}", **fields) for item_id in ids], actor="test")


def test_added_items_read_back_in_order(store):
    add(store, "a", "b")
    store.add([Item("c", Status.DONE, depends_on=("a",), notes="x; y")], actor="test")
    assert [item.id for item in store.items()] == ["a", "b", "c"]
    assert store.get("c").depends_on == ("a",)
    assert store.get("c").note_list() == ["x", "y"]
    assert store.counts() == {"PENDING": 2, "IN_PROGRESS": 0, "BLOCKED": 0, "FAILED": 0, "DONE": 1}
    assert [item.id for item in store.items(Status.DONE)] == ["c"]


def test_ids_are_unique_ignoring_case(store):
    add(store, "a")
    with pytest.raises(DuplicateIdError):
        add(store, "A")


def test_an_unknown_id_is_not_found(store):
    with pytest.raises(NotFoundError):
        store.get("nope")


def test_a_refused_update_writes_nothing(store):
    store.add([Item("a", Status.DONE, notes="done:1")], actor="test")
    with pytest.raises(NotEligibleError):
        store.update("a", model.cancel, actor="test", event="CANCELED")
    assert store.get("a").status is Status.DONE
    assert store.get("a").notes == "done:1"


def test_a_claim_takes_the_first_runnable_item_and_counts_the_attempt(store):
    add(store, "a", "b")
    claim = store.claim("w1", lease=LEASE, now=T0)
    assert (claim.item.id, claim.attempt, claim.lease_until) == ("a", 1, T0 + LEASE)
    item = store.get("a")
    assert (item.status, item.owner, item.attempts) == (Status.IN_PROGRESS, "w1", 1)
    assert item.started == "2027-01-15T08:00:00Z"
    assert store.claim("w2", lease=LEASE, now=T0).item.id == "b"
    assert store.claim("w3", lease=LEASE, now=T0) is None


def test_a_claim_can_ask_for_one_id_or_one_job(store):
    add(store, "a")
    add(store, "b", job="j1")
    assert store.claim("w", lease=LEASE, now=T0, job="j1").item.id == "b"
    assert store.claim("w", lease=LEASE, now=T0, item_id="b") is None
    assert store.claim("w", lease=LEASE, now=T0, item_id="a").item.id == "a"


def test_dependencies_must_be_done_first(store):
    add(store, "base")
    add(store, "next", depends_on=("BASE",))
    first = store.claim("w", lease=LEASE, now=T0)
    assert first.item.id == "base"
    assert store.claim("w", lease=LEASE, now=T0) is None
    store.complete("base", "w", attempt=1, now=T0)
    assert store.claim("w", lease=LEASE, now=T0).item.id == "next"


def test_complete_marks_done_with_the_attempt(store):
    add(store, "a")
    store.claim("w", lease=LEASE, now=T0)
    done = store.complete("a", "w", attempt=1, notes="all green", now=T0 + 1)
    assert done.status is Status.DONE
    assert done.note_list() == ["done:1", "all green"]


def test_complete_and_claim_finishes_one_item_and_takes_the_next_in_one_step(store):
    add(store, "a", "b")
    store.claim("w", lease=LEASE, now=T0)
    done, claim = store.complete_and_claim("a", "w", lease=LEASE, attempt=1, notes="all green", now=T0 + 1)
    assert (done.id, done.status, done.note_list()) == ("a", Status.DONE, ["done:1", "all green"])
    assert done == store.get("a")
    assert (claim.item.id, claim.attempt, claim.lease_until) == ("b", 1, T0 + 1 + LEASE)
    assert claim.item == store.get("b")
    assert (claim.item.status, claim.item.owner) == (Status.IN_PROGRESS, "w")
    assert [(e.event, e.to_status) for e in store.events("a")][-1] == ("COMPLETED", "DONE")
    assert [(e.event, e.to_status) for e in store.events("b")][-1] == ("CLAIMED", "IN_PROGRESS")
    done, claim = store.complete_and_claim("b", "w", lease=LEASE, now=T0 + 2)
    assert (done.status, claim) == (Status.DONE, None)


def test_a_fenced_complete_and_claim_completes_and_claims_nothing(store):
    add(store, "a", "b")
    store.claim("w", lease=LEASE, now=T0)
    for owner, attempt in (("w", 2), ("intruder", None)):
        with pytest.raises(LeaseLostError):
            store.complete_and_claim("a", owner, lease=LEASE, attempt=attempt, now=T0 + 1)
    with pytest.raises((NotFoundError, LeaseLostError)):  # as ``complete`` says of an unknown id
        store.complete_and_claim("nope", "w", lease=LEASE, now=T0 + 1)
    assert (store.get("a").status, store.get("b").status) == (Status.IN_PROGRESS, Status.PENDING)
    assert [e.event for e in store.events("b")] == ["ADDED"]


def test_complete_and_claim_can_take_the_dependent_it_unblocks_and_keeps_to_a_job(store):
    add(store, "base", job="j1")
    add(store, "other")
    add(store, "next", depends_on=("base",), job="j1")
    store.claim("w", lease=LEASE, now=T0, job="j1")
    done, claim = store.complete_and_claim("base", "w", lease=LEASE, attempt=1, now=T0, job="j1")
    assert done.status is Status.DONE and claim.item.id == "next"
    assert store.get("other").status is Status.PENDING


def test_complete_and_claim_reaps_expired_leases_before_claiming(store):
    add(store, "a", "b")
    store.claim("dead", lease=LEASE, now=T0)
    store.claim("w", lease=10 * LEASE, now=T0)
    done, claim = store.complete_and_claim("b", "w", lease=LEASE, attempt=1, now=T0 + LEASE)
    assert claim is None  # "a" was reaped, and backs off
    assert "lease_expired:dead" in store.get("a").notes
    assert store.get("a").status is Status.PENDING


def test_heartbeat_extends_the_lease_only_for_the_holder(store):
    add(store, "a")
    store.claim("w", lease=LEASE, now=T0)
    assert store.heartbeat("a", "w", lease=LEASE, attempt=1, now=T0 + 50) == T0 + 110
    assert store.lease_until("a") == T0 + 110
    with pytest.raises(LeaseLostError):
        store.heartbeat("a", "intruder", lease=LEASE, now=T0 + 50)
    with pytest.raises(LeaseLostError):
        store.heartbeat("a", "w", lease=LEASE, attempt=2, now=T0 + 50)
    assert store.reap(now=T0 + 100) == []  # extended: not expired yet
    assert store.get("a").status is Status.IN_PROGRESS


def test_an_expired_lease_is_reaped_and_the_late_worker_is_fenced_off(store):
    add(store, "a")
    store.claim("dead", lease=LEASE, now=T0)
    assert store.claim("alive", lease=LEASE, now=T0 + LEASE) is None  # reaped, then backs off
    reaped = store.get("a")
    assert reaped.status is Status.PENDING and "lease_expired:dead" in reaped.notes
    again = store.claim("alive", lease=LEASE, now=reaped.retry_not_before)
    assert again is not None and again.item.id == "a" and again.attempt == 2
    with pytest.raises(LeaseLostError):
        store.complete("a", "dead", attempt=1)
    assert store.complete("a", "alive", attempt=2).status is Status.DONE


def test_the_reaper_leaves_live_leases_alone(store):
    add(store, "a", "b")
    store.claim("w", lease=LEASE, now=T0)
    store.claim("w", lease=10 * LEASE, now=T0)
    reaped = store.reap(now=T0 + LEASE + 1)
    assert [item.id for item in reaped] == ["a"]
    assert store.get("b").status is Status.IN_PROGRESS


def test_a_failure_is_retried_after_a_backoff_until_attempts_run_out(store):
    add(store, "a")
    claims = 0
    now = T0
    while (claim := store.claim("w", lease=LEASE, now=now)) is not None:
        claims += 1
        failed = store.fail("a", "w", note="error:boom", attempt=claim.attempt, now=now)
        if failed.status is Status.PENDING:
            delay = failed.retry_not_before - now
            assert 10 * 2 ** (claims - 1) * 0.9 - 1 <= delay <= 10 * 2 ** (claims - 1) * 1.1
            assert store.claim("w", lease=LEASE, now=now) is None  # not before the backoff
            now = failed.retry_not_before
    assert claims == 3
    item = store.get("a")
    assert (item.status, item.attempts) == (Status.FAILED, 3)
    assert item.note_list().count("error:boom") == 3


def test_block_needs_a_human(store):
    add(store, "a")
    store.claim("w", lease=LEASE, now=T0)
    blocked = store.block("a", "w", note="intervention:tests disagree")
    assert blocked.status is Status.BLOCKED
    assert blocked.note_list()[-1] == "intervention:tests disagree"


def test_release_gives_the_item_back_with_the_attempt_counted(store):
    add(store, "a")
    store.claim("w", lease=LEASE, now=T0)
    released = store.release("a", "w", attempt=1)
    assert (released.status, released.owner, released.attempts) == (Status.PENDING, "", 1)
    assert store.claim("w2", lease=LEASE, now=T0).attempt == 2


def test_fail_block_and_release_by_another_owner_or_a_stale_attempt_are_fenced_off(store):
    add(store, "fail", "block", "release")
    for _ in range(3):
        store.claim("w", lease=LEASE, now=T0)
    assert len(store.reap(now=T0 + LEASE)) == 3  # each backs off 9-11 s, then "w" claims it again: attempt 2
    for _ in range(3):
        assert store.claim("w", lease=LEASE, now=T0 + LEASE + 20).attempt == 2
    reports = {
        "fail": lambda owner, attempt: store.fail("fail", owner, note="error:x", attempt=attempt, now=T0 + LEASE + 21),
        "block": lambda owner, attempt: store.block("block", owner, note="intervention:x", attempt=attempt),
        "release": lambda owner, attempt: store.release("release", owner, attempt=attempt),
    }
    before = {item_id: (store.get(item_id), store.events(item_id), store.lease_until(item_id)) for item_id in reports}
    for item_id, report in reports.items():
        for owner, attempt in (("intruder", None), ("intruder", 2), ("w", 1), ("w", 3)):
            with pytest.raises(LeaseLostError):
                report(owner, attempt)
            assert (store.get(item_id), store.events(item_id), store.lease_until(item_id)) == before[item_id]
    assert [report("w", 2).status for report in reports.values()] == [Status.PENDING, Status.BLOCKED, Status.PENDING]


def test_cancelling_a_running_item_fences_its_worker(store):
    add(store, "a")
    store.claim("w", lease=LEASE, now=T0)
    assert operations.cancel(store, "a").status is Status.BLOCKED
    with pytest.raises(LeaseLostError):
        store.heartbeat("a", "w", lease=LEASE, now=T0 + 1)
    with pytest.raises(LeaseLostError):
        store.complete("a", "w")


def test_replan_to_pending_resets_the_owner_and_renews_a_spent_budget(store):
    add(store, "a")
    now = T0
    while (claim := store.claim("w", lease=LEASE, now=now)) is not None:
        now = store.fail("a", "w", note="error:x", attempt=claim.attempt, now=now).retry_not_before or now
    assert store.get("a").status is Status.FAILED
    replanned = operations.replan(store, "a", "smaller steps")
    assert (replanned.status, replanned.owner) == (Status.PENDING, "")
    assert store.claim("w", lease=LEASE, now=now).attempt == 4


def test_every_transition_is_an_event(store):
    add(store, "a")
    claim = store.claim("w", lease=LEASE, now=T0)
    store.complete("a", "w", attempt=claim.attempt)
    assert [(e.event, e.from_status, e.to_status) for e in store.events("a")] == [
        ("ADDED", "", "PENDING"),
        ("CLAIMED", "PENDING", "IN_PROGRESS"),
        ("COMPLETED", "IN_PROGRESS", "DONE"),
    ]
    assert store.events("a")[1].data == {"attempt": 1}  # which attempt a claim started, on every backend


def test_upsert_adds_new_items_and_replaces_known_ones(store):
    add(store, "a")
    added, replaced = store.upsert([Item("a", Status.DONE, title="new"), Item("b")], actor="import")
    assert (added, replaced) == (1, 1)
    assert (store.get("a").status, store.get("a").title) == (Status.DONE, "new")
    assert store.get("b").status is Status.PENDING


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    max_attempts=st.integers(1, 5),
    base=st.floats(1, 600),
    factor=st.floats(1, 3),
    jitter=st.floats(0, 0.5),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_an_item_that_always_fails_ends_failed_after_exactly_max_attempts_claims(
    store, max_attempts, base, factor, jitter, seed, data
):
    policy = Policy(max_attempts=max_attempts, backoff_base=base, backoff_factor=factor, backoff_cap=3600,
                    jitter=jitter)  # fmt: skip
    store.policy, store.rng = policy, random.Random(seed)
    item_id = f"a{data.draw(st.integers(0, 10**9))}"
    if any(item.id == item_id for item in store.items()):
        return
    add(store, item_id)
    now, claims = T0, 0
    while (claim := store.claim("w", lease=LEASE, now=now, item_id=item_id)) is not None:
        claims += 1
        failed = store.fail(item_id, "w", note="error:always", attempt=claim.attempt, now=now)
        if failed.status is Status.PENDING:
            nominal = min(3600, base * factor ** (claims - 1))
            assert nominal * (1 - jitter) - 1 <= failed.retry_not_before - now <= nominal * (1 + jitter)
            now = failed.retry_not_before
    assert claims == max_attempts
    assert store.get(item_id).status is Status.FAILED
