"""``orch cleanup``: remove the worktrees of finished attempts, keep their branches.

A worktree with uncommitted changes, or whose HEAD holds commits no branch
holds, is refused (unless ``force``) and the reason says which. A cleaned
attempt is marked in its ``job_manifest.json``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestrator.manifest import END_STATES
from orchestrator.model import Status
from orchestrator.store.base import Store
from orchestrator.timeutil import now_iso
from orchestrator.worktree import write_json


@dataclass(frozen=True)
class CleanupResult:
    """What happened to one attempt's worktree."""

    item_id: str
    attempt: int
    path: Path
    action: str  # removed | would remove | refused
    reason: str = ""

    def as_dict(self) -> dict:
        return {"id": self.item_id, "attempt": self.attempt, "path": str(self.path), "action": self.action,
                "reason": self.reason}  # fmt: skip


def _git(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True)


def attempts(runtime: Path) -> list[tuple[str, int, Path]]:
    """Every attempt worktree under ``.orch/worktrees``: (id, attempt, path)."""
    root = runtime / "worktrees"
    found = []
    item_dirs = sorted(path for path in root.iterdir() if path.is_dir()) if root.is_dir() else []
    for item_dir in item_dirs:  # .orch/worktrees also holds the pool's lock file
        for attempt_dir in sorted(item_dir.iterdir(), key=lambda p: (len(p.name), p.name)):
            number = attempt_dir.name.split(".")[0]  # "3", or "3.2" when a reset queue repeated attempt 3
            if number.isdigit():
                found.append((item_dir.name, int(number), attempt_dir))
    return found


def is_finished(store: Store, runtime: Path, item_id: str, attempt: int, name: str = "") -> bool:
    """An attempt is finished when its manifest says so, or its item moved on without it."""
    manifest = runtime / "runs" / item_id / (name or str(attempt)) / "job_manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("state") in END_STATES:
        return True
    try:
        item = store.get(item_id)
    except Exception:
        return True  # the item is gone (archived or deleted)
    return item.status is not Status.IN_PROGRESS or item.attempts != attempt


def refusal(path: Path) -> str:
    """Why removing this worktree would lose work, or ''."""
    changed = [line[3:] for line in _git(path, "status", "--porcelain").stdout.splitlines()]
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        return f"uncommitted changes ({shown})"
    head = _git(path, "rev-parse", "HEAD").stdout.strip()
    holders = _git(path, "for-each-ref", "--contains", head, "--format=%(refname:short)", "refs/heads").stdout
    if head and not holders.strip():
        return f"commit {head[:12]} is on no branch"
    return ""


def clean(store: Store, repo_root: Path, *, item_id: str | None = None, job: str | None = None,
          dry_run: bool = False, force: bool = False) -> list[CleanupResult]:  # fmt: skip
    """Remove finished attempts' worktrees (all, one item's, or one job's)."""
    runtime = repo_root / ".orch"
    job_ids = {item.id for item in store.items() if item.job == job} if job else None
    results = []
    for found_id, attempt, path in attempts(runtime):
        if (item_id and found_id.lower() != item_id.lower()) or (job_ids is not None and found_id not in job_ids):
            continue
        if not is_finished(store, runtime, found_id, attempt, path.name):
            continue
        results.append(_clean_one(repo_root, runtime, found_id, attempt, path, dry_run, force))
    return results


def _clean_one(repo_root: Path, runtime: Path, item_id: str, attempt: int, path: Path, dry_run: bool,
               force: bool) -> CleanupResult:  # fmt: skip
    why = refusal(path)
    if why and not force:
        return CleanupResult(item_id, attempt, path, "refused", f"{why}; commit it, or use --force")
    if dry_run:
        return CleanupResult(item_id, attempt, path, "would remove", why)
    done = _git(repo_root, "worktree", "remove", *(["--force"] if force else []), str(path))
    if done.returncode != 0:
        return CleanupResult(item_id, attempt, path, "refused", done.stderr.strip()[:200])
    _mark_cleaned(runtime / "runs" / item_id / path.name / "job_manifest.json", force and bool(why))
    return CleanupResult(item_id, attempt, path, "removed", why)


def _mark_cleaned(manifest: Path, forced: bool) -> None:
    if not manifest.exists():
        return
    data = json.loads(manifest.read_text())
    data["cleaned"] = True
    data.setdefault("history", []).append(
        {
            "time": now_iso(),
            "state": data.get("state", ""),
            "message": "worktree removed" + (" (forced)" if forced else ""),
        }
    )
    write_json(manifest, data)
