"""Shared fixtures: real files and real git repositories in tmp_path, hypothesis profiles."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

ROOT = Path(__file__).resolve().parent.parent

SAMPLE_QUEUE = """\
# Work queue

Prose before the table | with a pipe that is not a table.

| id | status | title | owner | started | attempts | notes |
| --- | --- | --- | --- | --- | --- | --- |
| ORCH-001 | PENDING | Write the parser | | | 0 | |
| ORCH-002 | IN_PROGRESS | Fix \\| pipes | w1 | 2026-11-25T10:00:00Z | 1 | picked up |
| ORCH-003 | DONE | Ship it | | | 1 | done:1 |
| ORCH-004 | FAILED | Flaky test | w2 | 2026-11-25T09:00:00Z | 1 | error:boom |
| ORCH-005 | BLOCKED | Needs a human | | | 1 | intervention:ask |

Prose after the table.
"""


PG_DSN = os.environ.get("ORCH_TEST_PG_DSN") or None
REQUIRE_PG = os.environ.get("ORCH_REQUIRE_PG") == "1"
"""The test run's own settings, read once as pytest loads this file: ``_isolated_env`` deletes every ORCH_*
variable before each test, and a fixture set up inside a test (``request.getfixturevalue``, as the contract
``store`` does) would no longer see them. So any subset of the tests behaves like the whole suite."""


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No ORCH_* setting from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("ORCH_"):
            monkeypatch.delenv(name)


@pytest.fixture
def queue_file(tmp_path: Path) -> Path:
    """A valid QUEUE.md with one item in each state, prose around it."""
    path = tmp_path / "QUEUE.md"
    path.write_text(SAMPLE_QUEUE, encoding="utf-8")
    return path


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A real git repository with one commit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "config", "user.email", "test@example.invalid"], check=True)
    subprocess.run([*git, "config", "user.name", "orch tests"], check=True)
    (repo / "README.md").write_text("test repo\n")
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    return repo


@pytest.fixture
def cli_runner() -> CliRunner:
    return CliRunner()


def orch_argv(*args: str) -> list[str]:
    """argv that runs the real CLI in a fresh process."""
    return [sys.executable, "-m", "orchestrator", *args]


def run_orch(*args: str, cwd: Path | None = None, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """Run ``orch`` as a real process and capture its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(orch_argv(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


def real_address() -> str:
    """This machine's address on its default route (a UDP connect sends nothing); skip when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            pytest.skip("no network address here besides loopback")
        address = probe.getsockname()[0]
    if address.startswith("127.") or address == "0.0.0.0":
        pytest.skip("no network address here besides loopback")
    return address


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server DSN: ORCH_TEST_PG_DSN, else a throwaway cluster; skipped when neither exists,
    unless ORCH_REQUIRE_PG=1 (as in CI), where a missing server fails the tests."""
    if PG_DSN:
        yield PG_DSN
        return
    from tests.pgcluster import Cluster, server_bin

    required = REQUIRE_PG
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if required:
            pytest.fail("ORCH_REQUIRE_PG=1 but psycopg is not installed")
        pytest.skip("psycopg not installed: pip install 'orch[postgres]'")
    if not server_bin("initdb"):
        if required:
            pytest.fail("ORCH_REQUIRE_PG=1 but no PostgreSQL server binaries were found")
        pytest.skip("no PostgreSQL server here (set ORCH_TEST_PG_DSN or install postgresql)")
    cluster = Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def pg_dsn(pg_server):
    """A fresh, empty database for one test."""
    from tests.pgcluster import fresh_database

    return fresh_database(pg_server)
