"""What the dashboard shows, as data: the same facts as the CLI's ``--json`` output."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

from orchestrator import operations, render, workorder
from orchestrator.manifest import item_usage
from orchestrator.model import Status
from orchestrator.store.base import Store
from orchestrator.timeutil import parse_iso
from orchestrator.web import charts

LOG_TAIL = 200


def status(store: Store, runtime: Path) -> dict:
    """``orch status --json``."""
    return render.status_data(operations.summarize(store, runtime=runtime))


def workers(store: Store, runtime: Path) -> dict:
    """``orch workers --json``."""
    return render.workers_data(operations.worker_loads(store, runtime=runtime))


def board(store: Store, runtime: Path, status_filter: str = "", owner: str = "", job: str = "") -> dict:
    """The queue board: counts, and the items that pass the filters (stale ones marked)."""
    items = store.items()
    stale = operations.stale_items(store, runtime)
    shown = [
        {**item.as_dict(), "stale": stale.get(item.id, "")}
        for item in items
        if (not status_filter or item.status.value == status_filter)
        and (not owner or item.owner == owner)
        and (not job or item.job == job)
    ]
    counts = {s.value: 0 for s in Status}
    for item in items:
        counts[item.status.value] += 1
    return {
        "summary": counts, "items": shown, "filters": {"status": status_filter, "owner": owner, "job": job},
        "owners": sorted({i.owner for i in items if i.owner}), "jobs": sorted({i.job for i in items if i.job}),
    }  # fmt: skip


def attempts(runtime: Path, item_id: str) -> list[dict]:
    """Every attempt's manifest, oldest first."""
    folder = runtime / "runs" / item_id
    found = []
    for path in sorted(folder.glob("*/job_manifest.json"), key=lambda p: int(p.parent.name)):
        try:
            found.append(json.loads(path.read_text()))
        except ValueError:
            continue  # being written; the next refresh shows it
    return found


def evidence_commits(repo_root: Path, item_id: str) -> list[dict]:
    """The evidence commits on each attempt branch, with the files each changed."""
    listing = ["git", "-C", str(repo_root), "for-each-ref", "--format=%(refname:short)", f"refs/heads/orch/{item_id}/"]
    branches = subprocess.run(listing, capture_output=True, text=True).stdout.split()
    commits = []
    for branch in sorted(branches):
        log = subprocess.run(
            ["git", "-C", str(repo_root), "log", "--format=%x00%H%x01%s", "--name-only", f"{branch}",
             "--not", "--exclude=orch/*", "--branches"],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        for chunk in log.split("\x00")[1:]:
            head, _, names = chunk.partition("\n")
            sha, _, subject = head.partition("\x01")
            commits.append({"branch": branch, "sha": sha, "subject": subject,
                            "files": [n for n in names.splitlines() if n.strip()]})  # fmt: skip
    return commits


def item(store: Store, runtime: Path, repo_root: Path, item_id: str) -> dict:
    """``orch show --id --json``, plus attempts and evidence commits."""
    found, events = operations.show(store, item_id)
    return {
        **found.as_dict(), "history": [event.as_dict() for event in events], "usage": item_usage(runtime, found.id),
        "runs": attempts(runtime, found.id), "commits": evidence_commits(repo_root, found.id),
        "stale": operations.stale_items(store, runtime).get(found.id, ""),
    }  # fmt: skip


def job(store: Store, root: Path, job_id: str) -> dict:
    """``orch job status --json``, plus its results and the execution.log tail."""
    package = workorder.Package.of(root, job_id)
    package.read_order()  # NoWorkOrderError (404) before status() locks a folder that is not there
    state = workorder.status(store, package)
    return {**state.as_dict(), "results": results(package), "log": log_tail(package)}


def results(package: workorder.Package) -> list[dict]:
    if not package.results.exists():
        return []
    return [json.loads(line) for line in package.results.read_text().splitlines() if line.strip()]


def log_tail(package: workorder.Package, lines: int = LOG_TAIL) -> list[str]:
    if not package.log.exists():
        return []
    return package.log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]


def jobs(root: Path) -> list[str]:
    folder = root / workorder.JOBS_DIR
    return sorted(p.name for p in folder.iterdir() if (p / workorder.WORK_ORDER).is_file()) if folder.is_dir() else []


def all_results(root: Path) -> list[dict]:
    found = []
    for job_id in jobs(root):
        for result in results(workorder.Package.of(root, job_id)):
            found.append({**result, "job": job_id})
    return found


def _finished_at(result: dict) -> float | None:
    stamp = str(result.get("finished", ""))
    if not stamp:
        return None
    if stamp.endswith("Z"):
        return parse_iso(stamp)
    try:
        return time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def chart(root: Path, name: str, job_id: str = "") -> str:
    """One SVG chart: progress, throughput, pools or cost."""
    done = [r for r in all_results(root) if not job_id or r["job"] == job_id]
    if name == "progress":
        times = sorted(t for t in (_finished_at(r) for r in done) if t is not None)
        start = times[0] if times else 0
        points = [(t - start, k + 1) for k, t in enumerate(times)]
        return charts.line_chart("Progress over time (finished tasks)", points, "seconds")
    if name == "throughput":
        hours = Counter(time.strftime("%m-%d %H:00", time.localtime(t)) for t in map(_finished_at, done) if t)
        return charts.bar_chart("Throughput per hour", sorted(hours.items())[-12:], " tasks")
    if name == "pools":
        pools = Counter(r.get("pool") or r.get("agent") or "worker" for r in done)
        return charts.bar_chart("Pool use (tasks)", sorted(pools.items()), " tasks")
    cost = Counter()
    for result in done:
        cost[result["job"][-15:]] += float(result.get("cost_usd") or 0)
    return charts.bar_chart("Cost per job (USD)", sorted(cost.items()), " USD")
