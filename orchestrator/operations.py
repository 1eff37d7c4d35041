"""The operator commands as a library: what ``orch status/cancel/retry/...`` do, minus the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import model
from orchestrator.errors import BadInputError, DuplicateIdError, NotEligibleError, Problem
from orchestrator.model import Item, Status
from orchestrator.store.base import Event, Store

ACTOR_CLI = "operator@cli"
TOP_IN_PROGRESS = 5
ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32, lower case
ID_TOKEN_LENGTH = 6


@dataclass(frozen=True)
class Summary:
    """Counts by status and the oldest running items, for ``status``."""

    counts: dict[str, int]
    top_in_progress: list[Item]
    stale: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerLoad:
    """The IN_PROGRESS items one owner holds, for ``workers``."""

    owner: str
    ids: list[str]
    oldest_start: str
    stale: list[str] = field(default_factory=list)


def _oldest_first(items: list[Item]) -> list[Item]:
    """By start time; rows without a readable start keep queue order, after the rest."""
    from orchestrator.queuefile import start_key

    def key(pair: tuple[int, Item]) -> tuple[int, str, int]:
        position, item = pair
        return (0, start_key(item.started), position) if item.started else (1, "", position)

    return [item for _, item in sorted(enumerate(items), key=key)]


def stale_items(store: Store, runtime: Path | None, now: float | None = None) -> dict[str, str]:
    """IN_PROGRESS items nobody is working on: their lease expired, or their runner's process is gone."""
    import time

    from orchestrator.procs import ProcessRegistry

    now = time.time() if now is None else now
    stale = {item_id: "lease_expired" for item_id, end in store.lease_ends().items() if end is not None and end <= now}
    if runtime is not None:
        for entry in ProcessRegistry(runtime).entries():
            if entry.item_id not in stale and not entry.runner_alive():
                stale[entry.item_id] = "runner_gone"
    return stale


def summarize(store: Store, top: int = TOP_IN_PROGRESS, runtime: Path | None = None) -> Summary:
    """``status``: how many items in each state, and up to ``top`` running ones, oldest first."""
    counts = store.counts()
    stale = stale_items(store, runtime) if counts["IN_PROGRESS"] else {}
    return Summary(counts, store.oldest(Status.IN_PROGRESS, top), stale)


def worker_loads(store: Store, runtime: Path | None = None) -> list[WorkerLoad]:
    """``workers``: IN_PROGRESS items grouped by owner, the longest-running owner first."""
    groups: dict[str, list[Item]] = {}
    running = _oldest_first(store.items(Status.IN_PROGRESS))
    for item in running:
        groups.setdefault(item.owner or "unowned", []).append(item)
    stale = stale_items(store, runtime) if running else {}
    return [
        WorkerLoad(
            owner, [item.id for item in group], group[0].started or "-", [item.id for item in group if item.id in stale]
        )  # fmt: skip
        for owner, group in groups.items()
    ]


def reassign(store: Store, item_id: str, to: str, known_agents: list[str], *, actor: str = ACTOR_CLI) -> Item:
    """A BLOCKED or FAILED item goes back to PENDING for another agent (the next claim uses it)."""
    from dataclasses import replace

    if known_agents and to not in known_agents:
        raise BadInputError(f"--to {to!r}: no agent of that name in orch.yaml (agents: {', '.join(known_agents)})")
    model.check_id(to)  # it becomes a cell and a config key: keep it to id characters
    if not store.keeps("agent"):
        raise BadInputError("the queue has no 'agent' column to record the new agent in; add one to the header")

    def change(item: Item) -> Item:
        if item.status not in (Status.BLOCKED, Status.FAILED):
            why = f"it is {item.status.value}; only BLOCKED or FAILED items can be reassigned"
            raise NotEligibleError(item.id, item.status.value, "reassign", why)
        notes = model.append_note(item.notes, f"reassign:{to}")
        reset = replace(item, status=Status.PENDING, agent=to, owner="", started="", notes=notes)
        return model.replan_budget(item, reset, store.policy)

    return store.update(model.check_id(item_id), change, actor=actor, event="REASSIGNED")


def cancel(store: Store, item_id: str, *, actor: str = ACTOR_CLI) -> Item:
    """PENDING or IN_PROGRESS becomes BLOCKED with ``cancelled_by_operator``."""
    return store.update(model.check_id(item_id), model.cancel, actor=actor, event="CANCELED")


def cancel_many(store: Store, runtime: Path, *, item_id: str | None = None, everything: bool = False,
                job: str | None = None, grace: float = 5.0, actor: str = ACTOR_CLI) -> list[Item]:  # fmt: skip
    """Cancel one item, every running item, or a work order's open items; stop their agents."""
    from orchestrator.procs import ProcessRegistry

    if item_id:
        chosen = [model.check_id(item_id)]
    elif everything:
        chosen = [item.id for item in store.items(Status.IN_PROGRESS)]
    else:
        chosen = [item.id for item in store.items() if item.job == job and item.status in model.CANCELLABLE]
    cancelled = [cancel(store, chosen_id, actor=actor) for chosen_id in chosen]
    registry = ProcessRegistry(runtime)
    for item in cancelled:
        registry.stop_item(item.id, grace)
    return cancelled


def clear_backoff(store: Store, item_id: str) -> Item:
    """Let a retried item run now (``retry --run``): the operator is waiting for it."""
    from dataclasses import replace

    def change(item: Item) -> Item:
        return replace(item, retry_not_before=None)

    return store.update(model.check_id(item_id), change, actor=ACTOR_CLI, event="RUN_NOW")


def replan(store: Store, item_id: str, notes: str, *, actor: str = ACTOR_CLI) -> Item:
    """Record why, and move to BLOCKED (if running) or PENDING."""
    if not notes.strip():
        raise BadInputError("missing notes: say why the item is replanned (--notes)")

    def change(item: Item) -> Item:
        return model.replan_budget(item, model.replan(item, notes), store.policy)

    return store.update(model.check_id(item_id), change, actor=actor, event="REPLANNED")


def retry(store: Store, item_id: str, *, actor: str = ACTOR_CLI) -> Item:
    """Return a retry-eligible item to PENDING, by the rules of the store's mode."""
    return store.retry(model.check_id(item_id), actor=actor)


def new_id(prefix: str) -> str:
    """A fresh id that two branches adding items at once will not both pick (no max+1)."""
    import secrets

    token = "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_TOKEN_LENGTH))
    return model.check_id(prefix + token)


def parse_sets(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``--set COLUMN=VALUE`` pairs into a dict; the column name is required."""
    values: dict[str, str] = {}
    for pair in pairs:
        column, equals, value = pair.partition("=")
        if not equals or not column.strip():
            raise BadInputError(f"--set {pair!r}: write it as COLUMN=VALUE")
        values[column.strip()] = value
    return values


def build_item(item_id: str, title: str, values: dict[str, str]) -> Item:
    """A new PENDING item from ``add``'s options; known columns are typed and checked."""
    from orchestrator.queuefile import INT_COLUMNS, KNOWN_COLUMNS, parse_depends

    fields: dict = {"title": title}
    extra: dict[str, str] = {}
    for column, value in values.items():
        name = column.lower()
        if name == "id":
            raise BadInputError("--set id=...: use --id to choose the id")
        if name not in KNOWN_COLUMNS:
            extra[column] = value
        elif name == "status":
            if value not in model.STATUS_WORDS:
                raise BadInputError(f"--set status={value}: use one of {', '.join(model.STATUS_WORDS)}")
            fields["status"] = Status(value)
        elif name in INT_COLUMNS:
            if not (value.isascii() and value.isdigit()):
                raise BadInputError(f"--set {name}={value}: must be a whole number")
            fields[name] = int(value)
        elif name == "depends_on":
            fields[name] = tuple(model.check_id(dep) for dep in parse_depends(value))
        else:
            fields[name] = value
    return Item(model.check_id(item_id), extra=extra, **fields)


def add(
    store: Store, *, title: str, item_id: str | None = None, values: dict[str, str] | None = None,
    prefix: str = "ORCH-", actor: str = ACTOR_CLI,
) -> Item:  # fmt: skip
    """Append one new item; without ``item_id`` a random one with ``prefix`` is made."""
    if not title.strip():
        raise BadInputError("--title is empty: say what the item is")
    for _ in range(5):
        item = build_item(item_id or new_id(prefix), title, values or {})
        try:
            return store.add([item], actor=actor)[0]
        except DuplicateIdError:
            if item_id:
                raise
    raise DuplicateIdError(item.id)  # five random ids taken: practically impossible


def show(store: Store, item_id: str) -> tuple[Item, list[Event]]:
    """One item and its recorded history."""
    item = store.get(model.check_id(item_id))
    return item, store.events(item_id)


def validate_file(path: Path, display: str | None = None) -> tuple[list[Problem], int]:
    """Every broken house rule in one queue file, and how many items it holds."""
    from orchestrator.queuefile import QueueFile

    name = display or str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return [Problem(name, 0, "no such file")], 0
    queue = QueueFile.parse(name, data)
    return queue.problems, len(queue.id_list)


def claim(store: Store, owner: str, *, lease: float, item_id: str | None = None, job: str | None = None):
    """The pull API's claim: a ``Claim``, or ``NothingRunnableError`` (exit 1)."""
    from orchestrator.errors import NothingRunnableError

    taken = store.claim(_check_owner(owner), lease=lease, item_id=item_id and model.check_id(item_id), job=job)
    if taken is None:
        raise NothingRunnableError()
    return taken


def heartbeat(store: Store, item_id: str, owner: str, *, lease: float, attempt: int | None = None) -> float:
    return store.heartbeat(model.check_id(item_id), _check_owner(owner), lease=lease, attempt=attempt)


def complete(store: Store, item_id: str, owner: str, *, attempt: int | None = None, notes: str = "") -> Item:
    return store.complete(model.check_id(item_id), _check_owner(owner), attempt=attempt, notes=notes)


def fail(store: Store, item_id: str, owner: str, *, reason: str, attempt: int | None = None) -> Item:
    if not reason.strip():
        raise BadInputError("--reason is empty: say what went wrong")
    return store.fail(model.check_id(item_id), _check_owner(owner), note=f"error:{reason}", attempt=attempt)


def _check_owner(owner: str) -> str:
    if not owner.strip() or any(ch in owner for ch in "\n\r|"):
        raise BadInputError(f"--owner {owner!r}: use a name without newlines or pipes")
    return owner


def export_queue(store: Store, target: Path) -> tuple[int, int]:
    """Copy every item of ``store`` into the markdown queue at ``target`` (made if missing)."""
    return write_rows(target, store.items(), actor="orch@export")


def write_rows(target: Path, items: list[Item], actor: str = "orch@archive") -> tuple[int, int]:
    """Upsert ``items`` into the markdown queue at ``target``, making it (with their columns) if missing."""
    from orchestrator.store.markdown import MarkdownStore

    if not target.exists():
        target.write_text(new_queue_text(items), encoding="utf-8")
    return MarkdownStore(target).upsert(items, actor=actor)


def import_queue(store: Store, source: Path) -> tuple[int, int]:
    """Copy every item of the markdown queue at ``source`` into ``store``."""
    from orchestrator.store.markdown import MarkdownStore

    return store.upsert(MarkdownStore(source).items(), actor="orch@import")


def new_queue_text(items: list[Item] = ()) -> str:
    """A fresh QUEUE.md: a heading, a line of help, and a header with the columns ``items`` use."""
    from orchestrator import mdtable
    from orchestrator.queuefile import KNOWN_COLUMNS

    used = [c for c in KNOWN_COLUMNS if c in ("id", "status", "title", "owner", "started", "attempts", "notes")
            or any(getattr(item, c) not in ("", None, (), 0) for item in items)]  # fmt: skip
    extra = list(dict.fromkeys(name for item in items for name in item.extra))
    columns = used + extra
    header = mdtable.render_row(columns) + "\n" + "|" + "|".join(" --- " for _ in columns) + "|\n"
    return "# Queue\n\nEdit by hand or with `orch`; `orch validate` checks it.\n\n" + header
