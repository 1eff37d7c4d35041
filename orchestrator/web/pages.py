"""The dashboard's HTML. Every piece of queue or agent text goes through ``escape``; no inline script."""

from __future__ import annotations

from html import escape
from urllib.parse import quote, urlencode

STATUSES = ("PENDING", "IN_PROGRESS", "BLOCKED", "FAILED", "DONE")


def page(title: str, page_id: str, token: str, body: str, read_only: bool) -> str:
    """The shell of every page: metadata for the script (as data, not code), nav, body."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)} - orch</title>"
        f'<meta name="orch-page" content="{escape(page_id)}">'
        f'<meta name="orch-token" content="{escape(token)}">'
        f'<meta name="orch-read-only" content="{"1" if read_only else "0"}">'
        '<link rel="stylesheet" href="/static/style.css"><script src="/static/app.js" defer></script>'
        '</head><body><header><a href="/">orch</a> <span id="live" class="live">connecting</span></header>'
        f"<main>{body}</main></body></html>"
    )


def _summary(counts: dict) -> str:
    cells = "".join(
        f'<a class="count {s.lower()}" href="/?{urlencode({"status": s})}">{s} '
        f'<b data-count="{s}">{counts.get(s, 0)}</b></a>'
        for s in STATUSES
    )
    return f'<nav class="summary">{cells}</nav>'


def _options(values: list[str], chosen: str, blank: str) -> str:
    options = [f'<option value="">{escape(blank)}</option>']
    for value in values:
        selected = " selected" if value == chosen else ""
        options.append(f'<option value="{escape(value)}"{selected}>{escape(value)}</option>')
    return "".join(options)


def item_row(item: dict) -> str:
    stale = f' <span class="stale">stale: {escape(item["stale"])}</span>' if item.get("stale") else ""
    href = f"/item/{quote(item['id'])}"
    cells = [
        f'<a href="{escape(href)}">{escape(item["id"])}</a>',
        f'<span class="status {item["status"].lower()}">{escape(item["status"])}</span>{stale}',
        escape(item["title"]),
        escape(item["owner"]),
        escape(item["started"]),
        escape(str(item["attempts"])),
        escape(item["job"]),
        escape(item["notes"]),
    ]
    return f'<tr data-id="{escape(item["id"])}">' + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def board(data: dict, token: str, read_only: bool) -> str:
    filters = data["filters"]
    form = (
        '<form class="filters" method="get" action="/">'
        f'<select name="status">{_options(list(STATUSES), filters["status"], "any status")}</select>'
        f'<select name="owner">{_options(data["owners"], filters["owner"], "any owner")}</select>'
        f'<select name="job">{_options(data["jobs"], filters["job"], "any job")}</select>'
        "<button>filter</button></form>"
    )
    head = "".join(f"<th>{h}</th>" for h in ("id", "status", "title", "owner", "started", "attempts", "job", "notes"))
    rows = "".join(item_row(item) for item in data["items"])
    charts = "".join(
        f'<img class="chart" alt="{name} chart" data-chart="{name}" src="/charts/{name}.svg">'
        for name in ("progress", "throughput", "pools", "cost")
    )
    body = (
        f"<h1>Queue</h1>{_summary(data['summary'])}{form}"
        f'<table class="board"><thead><tr>{head}</tr></thead><tbody id="rows">{rows}</tbody></table>'
        f'<section class="charts">{charts}</section>'
    )
    return page("Queue", "board", token, body, read_only)


def _actions(item: dict, read_only: bool) -> str:
    if read_only:
        return ""
    item_id = escape(item["id"])
    return (
        f'<section class="actions" data-id="{item_id}">'
        '<button data-action="cancel">cancel</button> '
        '<button data-action="retry">retry</button> '
        '<input name="notes" placeholder="replan notes"> <button data-action="replan">replan</button> '
        '<input name="to" placeholder="agent"> <button data-action="reassign">reassign</button>'
        '<p class="message" id="message" role="status"></p></section>'
    )


def _definition(item: dict) -> str:
    rows = []
    for key in ("status", "title", "owner", "started", "attempts", "max_attempts", "agent", "job", "depends_on"):
        value = item.get(key)
        if value not in ("", None, [], 0) or key in ("status", "attempts"):
            shown = ", ".join(value) if isinstance(value, list) else str(value)
            rows.append(f'<dt>{key}</dt><dd data-field="{key}">{escape(shown)}</dd>')
    for key, value in item.get("extra", {}).items():
        rows.append(f"<dt>{escape(key)}</dt><dd>{escape(value)}</dd>")
    return f'<dl class="fields">{"".join(rows)}</dl>'


def item_page(item: dict, token: str, read_only: bool) -> str:
    notes = "".join(f"<li>{escape(note)}</li>" for note in item["notes"].split("; ") if note)
    history = "".join(
        f"<li>{escape(e['time'])} {escape(e['actor'])} {escape(e['event'])} "
        f"{escape(e['from'])} → {escape(e['to'])} {escape(e.get('note', ''))}</li>"
        for e in item["history"]
    )
    attempts = "".join(
        f"<li>attempt {escape(str(a.get('attempt')))}: <b>{escape(str(a.get('state')))}</b> on "
        f"{escape(str(a.get('branch')))}, {len(a.get('steps', []))} step(s)</li>"
        for a in item["runs"]
    )
    commits = "".join(
        f"<li><code>{escape(c['sha'][:10])}</code> {escape(c['subject'])} "
        f"<small>({escape(', '.join(c['files'][:8]))})</small></li>"
        for c in item["commits"]
    )
    stale = f'<p class="stale">stale: {escape(item["stale"])}</p>' if item.get("stale") else ""
    body = (
        f"<h1>{escape(item['id'])}</h1>{stale}{_definition(item)}{_actions(item, read_only)}"
        f'<h2>Notes</h2><ul id="notes">{notes or "<li>none</li>"}</ul>'
        f'<h2>Attempts</h2><ul id="attempts">{attempts or "<li>none yet</li>"}</ul>'
        f'<h2>Evidence commits</h2><ul id="commits">{commits or "<li>none yet</li>"}</ul>'
        f'<h2>History</h2><ul id="history">{history or "<li>none recorded</li>"}</ul>'
    )
    return page(item["id"], f"item:{item['id']}", token, body, read_only)


def job_page(job: dict, token: str, read_only: bool) -> str:
    results = "".join(
        "<tr>" + "".join(f"<td>{escape(str(r.get(k, '')))}</td>" for k in ("id", "status", "attempts", "duration_s",
                                                                           "pool", "branch", "cost_usd")) + "</tr>"
        for r in job["results"]
    )  # fmt: skip
    log = "\n".join(escape(line) for line in job["log"])
    job_id = escape(job["job_id"])
    body = (
        f'<h1>Work order {job_id}</h1><p>{escape(job["name"])} - <b id="job-status">{escape(job["status"])}</b>'
        f" - strategy {escape(job['strategy'])}</p>"
        f'<p class="progress"><progress id="job-progress" max="100" value="{job["progress"]:.0f}"></progress> '
        f'<span id="job-counts">{job["completed"]}/{job["dispatched"]} done, {job["failed"]} failed, '
        f"{job['backlog']} in backlog</span></p>"
        f'<img class="chart" alt="progress chart" data-chart="progress" src="/charts/progress.svg?job={job_id}">'
        "<h2>Results</h2><table><thead><tr><th>id</th><th>status</th><th>attempts</th><th>seconds</th>"
        f'<th>pool</th><th>branch</th><th>cost</th></tr></thead><tbody id="results">{results}</tbody></table>'
        f'<h2>execution.log</h2><pre id="log">{log}</pre>'
    )
    return page(f"Job {job['job_id']}", f"job:{job['job_id']}", token, body, read_only)


def error_page(status: int, message: str, token: str) -> str:
    return page(str(status), "error", token, f"<h1>{status}</h1><p>{escape(message)}</p>", True)
