"""How tests open each backend; the markdown queue has every column the contract uses."""

from __future__ import annotations

from pathlib import Path

from orchestrator.store.markdown import MarkdownStore
from orchestrator.store.sqlite import SqliteStore

BACKENDS = ["markdown", "sqlite"]
ALL_BACKENDS = [*BACKENDS, "postgres"]  # postgres needs the pg_dsn fixture (a server)

FULL_HEADER = (
    "| id | status | title | owner | started | attempts | max_attempts | retry_not_before "
    "| agent | job | depends_on | notes |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


def make_store(backend: str, folder: Path, dsn: str | None = None, **options):
    """A fresh, empty store of this backend in ``folder`` (PostgreSQL: in the database ``dsn``)."""
    if backend == "markdown":
        path = Path(folder) / "QUEUE.md"
        path.write_text("# Queue\n\n" + FULL_HEADER)
        return MarkdownStore(path, durable=False, **options)
    if backend == "postgres":
        from orchestrator.store.postgres import PostgresStore

        return PostgresStore(dsn, **options)
    return SqliteStore(Path(folder) / "queue.db", **options)
