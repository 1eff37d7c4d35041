"""Storage backends behind one contract; ``open_store`` is the only place that picks one."""

from __future__ import annotations

from pathlib import Path

from orchestrator.model import DEFAULT_POLICY, Policy
from orchestrator.store.base import Event, Store


def open_store(*, queue: Path, db: str | None = None, policy: Policy = DEFAULT_POLICY, lease: float = 300.0,
               create: bool = True) -> Store:  # fmt: skip
    """PostgreSQL for a ``postgresql://`` URL, SQLite for another ``db`` path, else markdown at ``queue``.

    ``create=False``: a SQLite file that does not exist is an error (reads never make one)."""
    if db and db.startswith(("postgresql://", "postgres://")):
        from orchestrator.store.postgres import PostgresStore

        return PostgresStore(db, policy=policy, default_lease=lease)
    if db:
        from orchestrator.store.sqlite import SqliteStore

        return SqliteStore(Path(db), policy=policy, default_lease=lease, create=create)
    from orchestrator.store.markdown import MarkdownStore

    return MarkdownStore(queue, policy=policy)


__all__ = ["Event", "Store", "open_store"]
