"""Storage backends behind one contract; ``open_store`` is the only place that picks one."""

from __future__ import annotations

from pathlib import Path

from orchestrator.store.base import Event, Store


def open_store(*, queue: Path, db: str | None = None) -> Store:
    """Return the SQLite store when ``--db`` was given, else the markdown one."""
    if db:
        from orchestrator.store.sqlite import SqliteStore

        return SqliteStore(Path(db))
    from orchestrator.store.markdown import MarkdownStore

    return MarkdownStore(queue)


__all__ = ["Event", "Store", "open_store"]
