"""Helpers for run tests: a real git repo with a queue and an orch.yaml, and a Runner over it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.config import load_config
from orchestrator.runner import Runner, RunOptions
from orchestrator.store.markdown import MarkdownStore
from orchestrator.store.sqlite import SqliteStore

HEADER = (
    "| id | status | title | owner | started | attempts | max_attempts | agent | depends_on | notes |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)
PY = sys.executable
WAIT = 20.0  # the most any awaited condition may take on a slow machine


def row(item_id: str, title: str = "a task", agent: str = "", deps: str = "") -> str:
    return f"| {item_id} | PENDING | {title} | | | 0 | | {agent} | {deps} | |\n"


def make_repo(folder: Path, rows: list[str], config: dict) -> Path:
    """A git repo at ``folder`` with QUEUE.md (these rows) and orch.yaml, committed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "QUEUE.md").write_text("# Queue\n\n" + HEADER + "".join(rows))
    (folder / "orch.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / ".gitignore").write_text(".orch/\nQUEUE.md.lock\n*.db\n*.db-*\n")
    git = ["git", "-C", str(folder)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "config", "user.email", "t@example.invalid"], check=True)
    subprocess.run([*git, "config", "user.name", "orch tests"], check=True)
    subprocess.run([*git, "add", "--all"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    return folder / "QUEUE.md"


def config(worker: dict, supervisor: dict | None = None, **settings) -> dict:
    """An orch.yaml with one worker agent ``w`` and a supervisor ``s`` (default: exit 0 = SUCCESS)."""
    return {
        "agents": {"w": worker, "s": supervisor or {"kind": "command", "argv": [PY, "-c", "pass"]}},
        "worker": "w",
        "supervisor": "s",
        **settings,
    }


def runner(folder: Path, *, backend: str = "markdown", report=None, **options) -> Runner:
    cfg = load_config(folder)
    if backend == "sqlite":
        store = SqliteStore(folder / "queue.db", policy=cfg.retry)
        if not store.items():
            store.upsert(MarkdownStore(folder / "QUEUE.md").items(), actor="test")
    else:
        store = MarkdownStore(folder / "QUEUE.md", policy=cfg.retry)
    options.setdefault("grace", 1.0)
    return Runner(store, cfg, folder, RunOptions(**options), report or (lambda line: None))


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout


def wait_for(condition, what: str, timeout: float = WAIT, detail=lambda: ""):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}\n{detail()}")
