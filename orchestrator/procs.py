"""Running agents: a registry under ``.orch/procs/`` and signalling their process groups.

Each agent runs in its own process group. Its pid, group and start time (from
``/proc``) are recorded atomically before it does any work, with the runner's
own pid and start time, so that ``orch cancel`` in another shell can stop the
right group, and a later runner can stop the agents of a runner that died. A
pid whose start time differs is a reused pid and is never signalled.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

PROCS_DIR = "procs"


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])  # field 22 of stat(5); fields[0] is field 3


def is_same_process(pid: int, started: int | None) -> bool:
    """Whether ``pid`` is still the process that started at ``started``."""
    return started is not None and start_time(pid) == started


def _running_in(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies, which cannot run, do not count)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            return True
    return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _running_in(pgid)


def stop_group(pgid: int, grace: float = 5.0, reap: Callable[[], object] | None = None) -> None:
    """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL whatever is left.

    ``reap`` collects our own child (the group's leader) so it does not linger as a zombie.
    """
    import signal  # here and below on first use: reading the queue needs neither signal nor json

    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not _wait_gone(pgid, grace, reap):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        _wait_gone(pgid, 5.0, reap)


def _wait_gone(pgid: int, seconds: float, reap: Callable[[], object] | None) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if reap is not None:
            reap()
        if not group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


@dataclass(frozen=True)
class AgentProcess:
    """One registered agent process group and the runner that owns it."""

    item_id: str
    attempt: int
    role: str
    pid: int
    pgid: int
    started: int
    runner_pid: int
    runner_started: int

    @property
    def key(self) -> str:
        return f"{self.item_id}.{self.attempt}.{self.role}"

    def runner_alive(self) -> bool:
        return is_same_process(self.runner_pid, self.runner_started)

    def agent_alive(self) -> bool:
        return is_same_process(self.pid, self.started)


class ProcessRegistry:
    """``.orch/procs/<id>.<attempt>.<role>.json``, one file per running agent."""

    def __init__(self, runtime_dir: Path) -> None:
        self.folder = Path(runtime_dir) / PROCS_DIR

    def register(self, entry: AgentProcess) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{entry.key}.json"
        import json

        temp = self.folder / f".{entry.key}.{os.getpid()}.tmp"
        temp.write_text(json.dumps(asdict(entry)))
        os.replace(temp, path)
        return path

    def unregister(self, entry: AgentProcess) -> None:
        (self.folder / f"{entry.key}.json").unlink(missing_ok=True)

    def entries(self) -> list[AgentProcess]:
        if not self.folder.is_dir():
            return []
        import json

        found = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                found.append(AgentProcess(**json.loads(path.read_text())))
            except (ValueError, TypeError, FileNotFoundError):
                continue  # half-written by a dying process, or gone meanwhile
        return found

    def stop(self, entry: AgentProcess, grace: float = 5.0) -> bool:
        """Stop one agent's group if it is still the registered process; True if signalled."""
        if not is_same_process(entry.pid, entry.started):
            self.unregister(entry)
            return False
        stop_group(entry.pgid, grace)
        self.unregister(entry)
        return True

    def stop_item(self, item_id: str, grace: float = 5.0) -> int:
        """Stop every registered agent of one item; how many groups were signalled."""
        return sum(self.stop(entry, grace) for entry in self.entries() if entry.item_id == item_id)

    def stop_orphans(self, grace: float = 5.0) -> list[AgentProcess]:
        """Stop agents whose runner died (SIGKILL leaves them running in their own groups); returns those signalled."""
        return [entry for entry in self.entries() if not entry.runner_alive() and self.stop(entry, grace)]


def this_runner() -> tuple[int, int]:
    """This process's pid and start time, recorded as the owner of the agents it starts."""
    pid = os.getpid()
    return pid, _own_start_time(pid)


@functools.lru_cache(maxsize=4)
def _own_start_time(pid: int) -> int:
    """Read once per process (keyed by pid, so a forked child reads its own)."""
    return start_time(pid) or 0
