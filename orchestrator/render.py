"""Text and ``--json`` renderings of command results (keeps cli.py thin)."""

from __future__ import annotations

from orchestrator.errors import Problem
from orchestrator.model import Item
from orchestrator.operations import Summary, WorkerLoad
from orchestrator.store.base import Event


def as_json(data: object) -> str:
    """The ``--json`` form of any result: indented, UTF-8 kept readable."""
    import json

    return json.dumps(data, indent=2, ensure_ascii=False)


def transition(item: Item) -> str:
    """``<id> -> <STATUS>``, the ops spec's output for cancel, replan and retry."""
    return f"{item.id} -> {item.status.value}"


def summary_line(summary: Summary) -> str:
    return "summary " + " ".join(f"{word}={count}" for word, count in summary.counts.items())


def status_text(summary: Summary) -> str:
    """Line 1 the counts, then ``top_in_progress:`` and its rows (or ``none``)."""
    lines = [summary_line(summary)]
    if not summary.top_in_progress:
        lines.append("top_in_progress: none")
    else:
        lines.append("top_in_progress:")
        for item in summary.top_in_progress:
            stale = summary.stale.get(item.id)
            lines.append(
                f"- {item.id} owner={item.owner or '-'} started={item.started or '-'}"
                + (f" stale={stale}" if stale else "")
                + (f" title={item.title}" if item.title else "")
            )
    return "\n".join(lines)


def status_data(summary: Summary) -> dict:
    """``status --json`` (and the dashboard's /api/status)."""
    top = [{**item.as_dict(), "stale": summary.stale.get(item.id, "")} for item in summary.top_in_progress]
    return {"summary": summary.counts, "top_in_progress": top, "stale": summary.stale}


def status_json(summary: Summary) -> str:
    return as_json(status_data(summary))


def workers_text(loads: list[WorkerLoad]) -> str:
    """``workers_active=<n> in_progress=<m>`` then one line per owner, or ``workers: none``."""
    total = sum(len(load.ids) for load in loads)
    lines = [f"workers_active={len(loads)} in_progress={total}"]
    if not loads:
        lines.append("workers: none")
    for load in loads:
        lines.append(f"- {load.owner} tasks={len(load.ids)} ids={','.join(load.ids)} oldest_start={load.oldest_start}")
    return "\n".join(lines)


def workers_data(loads: list[WorkerLoad]) -> dict:
    """``workers --json`` (and the dashboard's /api/workers)."""
    return {
        "workers_active": len(loads),
        "in_progress": sum(len(load.ids) for load in loads),
        "workers": [
            {"owner": load.owner, "tasks": len(load.ids), "ids": load.ids, "oldest_start": load.oldest_start,
             "stale": load.stale}
            for load in loads
        ],
    }  # fmt: skip


def workers_json(loads: list[WorkerLoad]) -> str:
    return as_json(workers_data(loads))


def item_text(item: Item, events: list[Event], usage: dict | None = None) -> str:
    """``show``: every field that has a value, usage over all attempts, the notes one per line, the history."""
    lines = [f"id: {item.id}", f"status: {item.status.value}"]
    for name, value in item.as_dict().items():
        if name in ("id", "status", "notes", "extra") or value in ("", None, [], 0):
            continue
        lines.append(f"{name}: {', '.join(value) if isinstance(value, list) else value}")
    lines += [f"{name}: {value}" for name, value in item.extra.items() if value]
    if usage:
        lines.append("usage (all attempts): " + " ".join(f"{key}={value:g}" for key, value in sorted(usage.items())))
    notes = item.note_list()
    lines.append("notes:" if notes else "notes: none")
    lines += [f"  - {note}" for note in notes]
    lines.append("history:" if events else "history: none recorded")
    for event in events:
        change = f"{event.from_status} -> {event.to_status}" if event.from_status else event.to_status
        note = f" {event.note}" if event.note else ""
        lines.append(f"  {event.time} {event.actor} {event.event} {change}{note}")
    return "\n".join(lines)


def item_json(item: Item, events: list[Event] | None = None, usage: dict | None = None) -> str:
    data = item.as_dict()
    if events is not None:
        data["history"] = [event.as_dict() for event in events]
    if usage is not None:
        data["usage"] = usage
    return as_json(data)


def problems_json(path: str, problems: list[Problem], count: int) -> dict:
    return {"path": path, "ok": not problems, "items": count, "problems": [p.as_dict() for p in problems]}


def run_summary(outcomes: list, store) -> str:
    """What a run did, then the queue's status and where to look."""
    from orchestrator.operations import summarize

    lines = [f"run finished: {len(outcomes)} attempt{'s' * (len(outcomes) != 1)}"]
    for outcome in outcomes:
        where = f" branch {outcome.branch}" if outcome.branch else ""
        lines.append(f"- {outcome.item_id} attempt {outcome.attempt}: {outcome.state}{where} ({outcome.manifest})")
    return "\n".join([*lines, status_text(summarize(store))])


RULE, THIN = "=" * 60, "-" * 60


def planned(package, count: int, strategy: str) -> str:
    """What ``orch plan`` made (seed 004's format)."""
    return (
        f"Created job package: {package.folder}/\n  - work_order.yaml\n  - manifest.jsonl ({count} tasks)\n"
        f"  Strategy: {strategy}\n  Backlog: job:{package.job_id}:backlog"
    )


def dispatched(package, added: int, known: int) -> str:
    lines = [f"Dispatched {added} tasks to job:{package.job_id}:backlog"]
    if known:
        lines.append(f"({known} already in the queue, not added again)")
    lines += [f"Job {package.job_id} ready for execution", f"Next step: orch run --job {package.job_id}"]
    return "\n".join(lines)


def job_status(state) -> str:
    """``orch job status``: seed 004's status block."""
    files = state.files
    return "\n".join([
        RULE, f"JOB STATUS: {state.job_id}", RULE,
        f"Name:      {state.name}", f"Status:    {state.status}", f"Strategy:  {state.strategy}", "",
        THIN, "PROGRESS", THIN,
        f"Dispatched:  {state.dispatched}", f"Backlog:     {state.backlog}", f"Completed:   {state.completed}",
        f"Failed:      {state.failed}", f"Progress:    {state.progress:.1f}%", "",
        THIN, "FILES", THIN,
        f"Manifest:    {files['manifest']}", f"Results:     {files['results']}", f"Exec Log:    {files['log']}",
        RULE,
    ])  # fmt: skip


def cleanup_lines(results: list) -> str:
    if not results:
        return "nothing to clean up"
    lines = []
    for result in results:
        reason = f": {result.reason}" if result.reason else ""
        kept = f" (branch orch/{result.item_id}/{result.attempt} kept)" if result.action != "refused" else ""
        lines.append(f"{result.action} {result.path}{kept}{reason}")
    return "\n".join(lines)


def archived(report, dry_run: bool) -> str:
    verb = "would move" if dry_run else "moved"
    return (
        f"{verb} {len(report.jobs)} job package{'s' * (len(report.jobs) != 1)} to jobs/archive/"
        + "".join(f"\n  - {job}" for job in report.jobs)
        + f"\n{verb} {len(report.rows)} DONE row{'s' * (len(report.rows) != 1)} to {report.target}"
    )
