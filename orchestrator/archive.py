"""``orch archive``: move finished job packages and old DONE rows out of the way.

Finished packages (status completed or failed, finished more than N days ago)
move to ``jobs/archive/<job_id>/``. DONE rows that started more than N days
ago, or belong to an archived package, move to ``QUEUE.archive.md`` (same
columns), so QUEUE.md stays short; a row another open row depends on stays.
Rows are written to the archive before they leave the queue: a crash in
between leaves a duplicate, never a loss.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from orchestrator.model import Item, Status, append_note
from orchestrator.store.base import Store
from orchestrator.timeutil import parse_iso
from orchestrator.workorder import JOBS_DIR, WORK_ORDER

ARCHIVE_QUEUE = "QUEUE.archive.md"
DAY = 86400.0


@dataclass
class ArchiveReport:
    """What was (or would be) archived."""

    jobs: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)
    target: str = ""

    def as_dict(self) -> dict:
        return {"jobs": self.jobs, "rows": self.rows, "archive": self.target}


def _finished_before(order: dict, cutoff: float) -> bool:
    if str(order.get("status")) not in ("completed", "failed"):
        return False
    stamp = (order.get("execution") or {}).get("completed_at") or order.get("created") or ""
    moment = parse_iso(str(stamp).rstrip("Z")) if stamp else None
    if moment is not None and not str(stamp).endswith("Z"):
        moment = time.mktime(time.strptime(str(stamp)[:19], "%Y-%m-%dT%H:%M:%S"))
    return moment is not None and moment < cutoff


def old_packages(root: Path, cutoff: float) -> list[Path]:
    folder = root / JOBS_DIR
    found = []
    for package in sorted(folder.iterdir()) if folder.is_dir() else []:
        order_path = package / WORK_ORDER
        if package.name != "archive" and order_path.is_file():
            if _finished_before(yaml.safe_load(order_path.read_text()) or {}, cutoff):
                found.append(package)
    return found


def rows_to_archive(items: list[Item], jobs: set[str], cutoff: float) -> list[Item]:
    """DONE rows that are old (or of an archived job) and that no remaining row depends on."""

    def old(item: Item) -> bool:
        started = parse_iso(item.started)
        return item.job in jobs or (started is not None and started < cutoff)

    chosen = {item.id.lower() for item in items if item.status is Status.DONE and old(item)}
    kept = _needed_by_kept_rows(items, chosen)
    return [item for item in items if item.id.lower() in chosen and item.id.lower() not in kept]


def _needed_by_kept_rows(items: list[Item], chosen: set[str]) -> set[str]:
    """Every row a staying row needs, transitively: a kept row's dependencies stay too."""
    deps = {item.id.lower(): [dep.lower() for dep in item.depends_on] for item in items}
    pending = [dep for key, needs in deps.items() if key not in chosen for dep in needs]
    needed: set[str] = set()
    while pending:
        key = pending.pop()
        if key not in needed:
            needed.add(key)
            pending.extend(deps.get(key, ()))
    return needed


def _standalone(item: Item) -> Item:
    """An archived row keeps its dependencies as a note: the archive need not hold them."""
    if not item.depends_on:
        return item
    return replace(item, depends_on=(), notes=append_note(item.notes, f"depends_on:{','.join(item.depends_on)}"))


def archive(store: Store, root: Path, queue_path: Path, days: float, *, dry_run: bool = False,
            now: float | None = None) -> ArchiveReport:  # fmt: skip
    """Archive what finished more than ``days`` days ago."""
    from orchestrator.operations import write_rows

    cutoff = (time.time() if now is None else now) - days * DAY
    packages = old_packages(root, cutoff)
    rows = rows_to_archive(store.items(), {p.name for p in packages}, cutoff)
    target = queue_path.parent / ARCHIVE_QUEUE
    report = ArchiveReport([p.name for p in packages], [item.id for item in rows], str(target))
    if dry_run:
        return report
    if rows:
        write_rows(target, [_standalone(item) for item in rows])
        store.remove([item.id for item in rows], actor="orch@archive")
    for package in packages:
        destination = root / JOBS_DIR / "archive" / package.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(package), str(destination))
    return report
