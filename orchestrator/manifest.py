"""An attempt's ``job_manifest.json``: its state and full history, written atomically after every step."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.timeutil import now_iso
from orchestrator.worktree import write_json

RUNNING, SUCCESS, CANCELED = "RUNNING", "SUCCESS", "CANCELED"
INTERVENTION_REQUIRED, FAILED = "INTERVENTION_REQUIRED", "FAILED"
END_STATES = (SUCCESS, CANCELED, INTERVENTION_REQUIRED, FAILED)


def add_usage(total: dict, usage: dict) -> dict:
    """Sum numeric usage fields (tokens, cost) into ``total``."""
    for key, value in usage.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = round(total.get(key, 0) + value, 6)
    return total


def item_usage(runtime: Path, item_id: str) -> dict:
    """Usage and cost summed over every attempt of one item (each attempt's ``job_manifest.json``)."""
    total: dict = {}
    for path in sorted((Path(runtime) / "runs" / item_id).glob("*/job_manifest.json")):
        try:
            add_usage(total, json.loads(path.read_text(encoding="utf-8")).get("usage") or {})
        except (OSError, ValueError, AttributeError):
            continue  # being written, or not ours: the next look counts it
    return total


@dataclass
class JobManifest:
    """One attempt of one item, as recorded under ``.orch/runs/<id>/<attempt>/``."""

    path: Path
    item_id: str
    attempt: int
    owner: str
    branch: str = ""
    worktree: str = ""
    base: str = ""
    state: str = RUNNING
    steps: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    usage: dict = field(default_factory=dict)
    created: str = field(default_factory=now_iso)

    def note(self, state: str, message: str) -> None:
        """Move to ``state`` and record why, with the time."""
        self.state = state
        self.history.append({"time": now_iso(), "state": state, "message": message})
        self.write()

    def add_step(self, record: dict) -> None:
        self.steps.append(record)
        for role in ("worker", "supervisor"):
            add_usage(self.usage, record.get(role, {}).get("usage", {}))
        self.write()

    def as_dict(self) -> dict:
        return {
            "id": self.item_id, "attempt": self.attempt, "owner": self.owner, "state": self.state,
            "branch": self.branch, "worktree": self.worktree, "base": self.base, "created": self.created,
            "updated": now_iso(), "usage": self.usage, "steps": self.steps, "history": self.history,
        }  # fmt: skip

    def write(self) -> None:
        write_json(self.path, self.as_dict())
