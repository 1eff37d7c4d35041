"""``orch serve`` over HTTP: a real server on 127.0.0.1 (port 0), real queues, real git repositories.

The server runs in a thread (``make_server``, as ``orch serve`` builds it) or as
``orch serve --port 0`` in its own process. Its answers are compared with the
CLI's ``--json`` output for the same queue; its actions with the same CLI
commands on a copy of the queue. Every wait is bounded; the only timing
assertion is the issue's "a change reaches a connected page within 1 s".
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

# Collected in any Python; run where orch's dependencies are (./run-tests sets up .venv with them).
httpx = pytest.importorskip("httpx", reason="httpx is not installed in this Python: run ./run-tests")

from orchestrator import operations
from orchestrator.cli import cli
from orchestrator.conductor import Conductor
from orchestrator.config import load_config
from orchestrator.runner import Runner, RunOptions
from orchestrator.store import open_store
from orchestrator.store.markdown import MarkdownStore
from orchestrator.store.sqlite import SqliteStore
from orchestrator.web import live
from orchestrator.web import server as web
from orchestrator.workorder import Package
from tests.conftest import ROOT, orch_argv, real_address
from tests.runs import PY

HEADER = (
    "| id | status | title | owner | started | attempts | max_attempts | agent | job | depends_on | notes |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)
XSS = "<script>alert(1)</script>"
IMG_XSS = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
WAIT = 10.0  # seconds: the bound of every wait for something that should take well under one


def row(item_id: str, status: str = "PENDING", title: str = "a task", *, owner: str = "", attempts: int = 0,
        agent: str = "", job: str = "", notes: str = "") -> str:  # fmt: skip
    return f"| {item_id} | {status} | {title} | {owner} | | {attempts} | | {agent} | {job} | | {notes} |\n"


def write_repo(folder: Path, rows: list[str], settings: dict, *, git: bool = False) -> Path:
    """QUEUE.md (with agent and job columns) and orch.yaml in ``folder``; a committed git repo if ``git``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "QUEUE.md").write_text("# Queue\n\n" + HEADER + "".join(rows), encoding="utf-8")
    (folder / "orch.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    if git:
        (folder / ".gitignore").write_text(".orch/\nQUEUE.md.lock\n*.db\n*.db-*\n")
        steps = (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.invalid"],
                 ["config", "user.name", "orch tests"], ["add", "--all"], ["commit", "-q", "-m", "init"])  # fmt: skip
        for args in steps:
            subprocess.run(["git", "-C", str(folder), *args], check=True)
    return folder / "QUEUE.md"


def settings(**agents: dict) -> dict:
    quiet = {"kind": "command", "argv": [PY, "-c", "pass"]}
    return {"agents": {"w": quiet, "s": quiet, "other": quiet, **agents}, "worker": "w", "supervisor": "s",
            "retry": {"max_attempts": 3, "backoff_base": 0.01}}  # fmt: skip


def cli_json(queue: Path, *args: str):
    result = CliRunner().invoke(cli, ["--queue", str(queue), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# --- a dashboard in a thread ------------------------------------------------------------


@dataclass
class Served:
    """A running dashboard over ``root`` and how to talk to it (a fresh connection per request)."""

    root: Path
    dashboard: web.Dashboard
    server: object
    thread: threading.Thread
    url: str = ""
    port: int = 0

    @property
    def queue(self) -> Path:
        return self.root / "QUEUE.md"

    @property
    def token(self) -> str:
        return self.dashboard.token

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=WAIT, **kwargs)

    def post(self, path: str, body: dict | None = None, *, token: str | None = None, headers: dict | None = None,
             **kwargs) -> httpx.Response:  # fmt: skip
        sent = {"X-Orch-Token": self.token if token is None else token, **(headers or {})}
        if token == "":
            del sent["X-Orch-Token"]
        return httpx.post(self.url + path, json=body or {}, headers=sent, timeout=WAIT, **kwargs)

    def stop(self) -> None:
        self.server.shutdown()
        self.dashboard.hub.stop()
        self.server.server_close()
        self.thread.join(WAIT)


def serve(root: Path, **options) -> Served:
    """The dashboard ``orch --queue ROOT/QUEUE.md serve --port 0`` would run, in a thread (``options``: the
    Dashboard's, e.g. ``read_only``, ``host``, ``extra_hosts``)."""
    cfg = load_config(root)
    queue = root / "QUEUE.md"
    dashboard = web.Dashboard(root, lambda: open_store(queue=queue, policy=cfg.retry, lease=cfg.lease), cfg,
                              **options)  # fmt: skip
    server = web.make_server(dashboard)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return Served(root, dashboard, server, thread, f"http://127.0.0.1:{dashboard.port}", dashboard.port)


@pytest.fixture
def dashboards():
    """``start(root, read_only=False)`` -> Served; every one is stopped after the test."""
    started: list[Served] = []

    def start(root: Path, **options) -> Served:
        started.append(serve(root, **options))
        return started[-1]

    yield start
    for served in started:
        served.stop()


# --- an SSE client --------------------------------------------------------------------


@dataclass
class Event:
    kind: str
    id: str
    data: dict
    at: float  # time.time() when it arrived


@dataclass
class Stream:
    """One raw ``GET /api/stream`` connection; every read has a deadline."""

    port: int
    last_id: str | None = None
    host: str | None = None
    extra: tuple[str, ...] = ()  # more header lines, e.g. a cookie
    sock: socket.socket = field(init=False)
    status: int = field(init=False, default=0)
    headers: dict = field(init=False, default_factory=dict)
    buffer: bytes = field(init=False, default=b"")

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        host = f"127.0.0.1:{self.port}" if self.host is None else self.host
        lines = ["GET /api/stream HTTP/1.1", f"Host: {host}", "Accept: text/event-stream"]
        if self.last_id is not None:
            lines.append(f"Last-Event-ID: {self.last_id}")
        lines.extend(self.extra)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = self._read_until(b"\r\n\r\n", time.monotonic() + WAIT)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}

    def _read_until(self, mark: bytes, deadline: float) -> bytes | None:
        while mark not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("the server closed the stream")
            self.buffer += chunk
        block, self.buffer = self.buffer.split(mark, 1)
        return block

    def next(self, timeout: float = WAIT) -> Event | None:
        """The next event (comments skipped), or None if none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            block = self._read_until(b"\n\n", deadline)
            if block is None:
                return None
            fields = dict(line.split(": ", 1) for line in block.decode().splitlines() if not line.startswith(":"))
            if "event" in fields:
                return Event(fields["event"], fields.get("id", ""), json.loads(fields.get("data", "{}")), time.time())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def streams():
    opened: list[Stream] = []

    def open_stream(port: int, **options) -> Stream:
        opened.append(Stream(port, **options))
        return opened[-1]

    yield open_stream
    for stream in opened:
        stream.close()


# --- an HTML checker ------------------------------------------------------------------


class Markup(HTMLParser):
    """The tags of a page: every script, every event-handler attribute, every javascript: URL."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[dict] = []
        self.handlers: list[tuple[str, str]] = []
        self.images: list[str] = []
        self.rows: list[str] = []
        self.text: list[str] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
        if tag == "img":
            self.images.append(attributes.get("src") or "")
        if tag == "tr" and "data-id" in attributes:
            self.rows.append(attributes["data-id"])
        for name, value in attrs:
            if name.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                self.handlers.append((tag, name))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data
        self.text.append(data)


def markup(text: str) -> Markup:
    parser = Markup()
    parser.feed(text)
    parser.close()
    return parser


def assert_safe_html(answer: httpx.Response) -> Markup:
    """Served as HTML under a CSP without inline script, and no script but /static/app.js in it."""
    assert answer.headers["content-type"].startswith("text/html")
    csp = answer.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    page = markup(answer.text)
    assert page.scripts == [{"src": "/static/app.js", "defer": None}], page.scripts
    assert page.script_text == "" and page.handlers == []
    assert XSS not in answer.text and IMG_XSS not in answer.text
    return page


# --- the shared world: a queue in every state, a stale item, a work order that ran -----------

WORLD_ROWS = [
    row("W-1", title=f"Write {XSS} docs", notes=f"note:{XSS}"),
    row("W-2", "BLOCKED", "Needs a human", attempts=1, notes=f"intervention:{XSS}"),
    row("W-3", "FAILED", "Flaky", attempts=1, notes="error:boom"),
    row("W-4", "DONE", "Shipped", attempts=1, notes="done:1"),
    row("W-5", title="claimed, live"),
    row("W-6", title="claimed, then its lease ends"),
]
WRITER = {"kind": "scripted", "steps": [{"write": {f"{IMG_XSS}.txt": "hi\n"}, "say": XSS}]}
FAILER = {"kind": "scripted", "steps": [{"say": XSS, "exit": 1}]}
JUDGE = {"kind": "scripted", "steps": [{"verdict": {"verdict": "SUCCESS", "reason": f"fine {XSS}"}}]}


@dataclass
class World:
    root: Path
    served: Served
    job: str
    ok_item: str
    failed_item: str

    @property
    def queue(self) -> Path:
        return self.root / "QUEUE.md"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world")
    cfg = {**settings(w=WRITER, bad=FAILER, s=JUDGE), "retry": {"max_attempts": 1}}  # a failure stays FAILED
    queue = write_repo(root, WORLD_ROWS, cfg, git=True)
    tasks = root / "tasks.jsonl"
    tasks.write_text(
        json.dumps({"id": "t1", "prompt": "write it", "title": f"{XSS} task", "agent": "w"}) + "\n"
        + json.dumps({"id": "t2", "prompt": "fail it", "agent": "bad"}) + "\n"
    )  # fmt: skip
    planned = CliRunner().invoke(cli, ["--queue", str(queue), "plan", "--name", f"web {XSS}", "--tasks", str(tasks)],
                                 catch_exceptions=False)  # fmt: skip
    folder = re.match(r"Created job package: (.+)/\n", planned.stdout).group(1)
    package = Package(Path(folder))
    assert CliRunner().invoke(cli, ["--queue", str(queue), "dispatch", str(package.order)]).exit_code == 0
    config = load_config(root)
    store = MarkdownStore(queue, policy=config.retry)
    conductor = Conductor(store, config, package)
    runner = Runner(store, config, root, RunOptions(job=package.job_id, grace=1.0), lambda line: None, conductor)
    conductor.attach(runner)
    outcomes = runner.run()
    assert sorted(o.state for o in outcomes) == ["FAILED", "SUCCESS"], outcomes
    assert store.claim("w-live", lease=3600, item_id="W-5") is not None
    assert store.claim("w-gone", lease=0.001, item_id="W-6") is not None
    time.sleep(0.01)  # the W-6 lease ends
    served = serve(root)
    yield World(root, served, package.job_id, f"{package.job_id}-t1", f"{package.job_id}-t2")
    served.stop()


def items_by_id(queue: Path) -> dict:
    return {item.id: item for item in MarkdownStore(queue).items()}


# --- pages ---------------------------------------------------------------------------------


def test_the_board_lists_every_item_with_the_counts_and_marks_the_stale_one(world):
    answer = world.served.get("/")
    assert answer.status_code == 200
    page = assert_safe_html(answer)
    items = items_by_id(world.queue)
    assert page.rows == list(items)
    counts = MarkdownStore(world.queue).counts()
    for status, count in counts.items():
        assert f'<b data-count="{status}">{count}</b>' in answer.text
    stale_row = re.search(r'<tr data-id="W-6">.*?</tr>', answer.text).group(0)
    assert '<span class="stale">stale: lease_expired</span>' in stale_row
    live_row = re.search(r'<tr data-id="W-5">.*?</tr>', answer.text).group(0)
    assert "stale" not in live_row and "w-live" in live_row
    assert ESCAPED in answer.text  # the title, the note
    assert set(page.images) == {f"/charts/{name}.svg" for name in ("progress", "throughput", "pools", "cost")}


@pytest.mark.parametrize(
    "query, expected",
    [
        ("status=PENDING", lambda i: i.status.value == "PENDING"),
        ("status=IN_PROGRESS", lambda i: i.status.value == "IN_PROGRESS"),
        ("status=DONE", lambda i: i.status.value == "DONE"),
        ("owner=w-live", lambda i: i.owner == "w-live"),
        ("owner=nobody", lambda i: False),
        ("job={job}", lambda i: bool(i.job)),
        ("status=FAILED&job={job}", lambda i: bool(i.job) and i.status.value == "FAILED"),
    ],
)  # fmt: skip
def test_the_board_and_its_json_filter_by_status_owner_and_job(world, query, expected):
    query = query.format(job=world.job)
    wanted = [item.id for item in MarkdownStore(world.queue).items() if expected(item)]
    page = assert_safe_html(world.served.get(f"/?{query}"))
    assert page.rows == wanted
    data = world.served.get(f"/api/items?{query}").json()
    assert [item["id"] for item in data["items"]] == wanted
    assert data["summary"] == MarkdownStore(world.queue).counts()  # the counts are never filtered


def test_api_status_is_orch_status_json(world):
    answer = world.served.get("/api/status")
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    data = answer.json()
    assert data == cli_json(world.queue, "status", "--json")
    assert data["stale"] == {"W-6": "lease_expired"}


def test_api_workers_is_orch_workers_json(world):
    data = world.served.get("/api/workers").json()
    assert data == cli_json(world.queue, "workers", "--json")
    assert {w["owner"]: w["stale"] for w in data["workers"]} == {"w-live": [], "w-gone": ["W-6"]}


def test_api_items_lists_every_item_as_the_store_has_it(world):
    data = world.served.get("/api/items").json()
    store = MarkdownStore(world.queue)
    stale = operations.stale_items(store, world.root / ".orch")
    assert data["items"] == [{**item.as_dict(), "stale": stale.get(item.id, "")} for item in store.items()]
    assert data["owners"] == sorted({item.owner for item in store.items() if item.owner})
    assert {"w-gone", "w-live"} <= set(data["owners"]) and data["jobs"] == [world.job]


def test_api_item_is_orch_show_json_plus_runs_and_commits(world):
    item_id = world.ok_item
    data = world.served.get(f"/api/items/{item_id}").json()
    shown = cli_json(world.queue, "show", "--id", item_id, "--json")
    assert {key: data[key] for key in shown} == shown
    assert set(data) - set(shown) == {"runs", "commits", "stale"} and data["stale"] == ""
    manifest = json.loads((world.root / f".orch/runs/{item_id}/1/job_manifest.json").read_text())
    assert data["runs"] == [manifest] and manifest["state"] == "SUCCESS"
    head = subprocess.run(["git", "-C", str(world.root), "rev-parse", f"orch/{item_id}/1"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    [commit] = data["commits"]
    assert (commit["branch"], commit["sha"]) == (f"orch/{item_id}/1", head)
    assert f"{IMG_XSS}.txt" in commit["files"]
    assert world.served.get("/api/items/W-6").json()["stale"] == "lease_expired"


def test_api_job_is_orch_job_status_json_plus_results_and_the_log(world):
    data = world.served.get(f"/api/jobs/{world.job}").json()
    status = cli_json(world.queue, "job", "status", world.job, "--json")
    assert {key: data[key] for key in status} == status
    package = Package.of(world.root, world.job)
    assert data["results"] == [json.loads(line) for line in package.results.read_text().splitlines()]
    assert [r["id"] for r in data["results"]] == [world.ok_item, world.failed_item]  # one worker: queue order
    assert data["log"] == package.log.read_text().splitlines()
    assert any(XSS in line for line in data["log"])  # the agent's words reach the log, as data


def test_the_item_and_job_pages_show_what_the_api_has(world):
    item = world.served.get(f"/item/{world.ok_item}")
    page = assert_safe_html(item)
    assert f"<h1>{world.ok_item}</h1>" in item.text
    assert '<dd data-field="status">DONE</dd>' in item.text and "operator@" not in item.text
    assert "attempt 1: <b>SUCCESS</b>" in item.text and f"{IMG_XSS}.txt" in "".join(page.text)
    job = world.served.get(f"/job/{world.job}")
    assert_safe_html(job)
    assert '<b id="job-status">FAILED</b>' in job.text and "1/2 done, 1 failed, 0 in backlog" in job.text
    assert job.text.count("<tr><td>") == 2 and ESCAPED in job.text
    assert world.served.get("/item/NOPE-1").status_code == 404
    assert world.served.get("/api/items/NOPE-1").json() == {"error": (
        CliRunner().invoke(cli, ["--queue", str(world.queue), "show", "--id", "NOPE-1"]).stderr[len("error: "):].strip()
    )}  # fmt: skip


def test_an_unknown_work_order_is_404(world):
    assert world.served.get("/api/jobs/no_such_job").status_code == 404
    assert world.served.get("/job/no_such_job").status_code == 404


PAGES = ["/", "/?status=PENDING", "/?owner=w-live", "/?job={job}", "/item/W-1", "/item/W-2", "/item/W-6",
         "/item/{ok}", "/item/{failed}", "/job/{job}", "/item/NOPE-1", "/no/such/page",
         f"/item/{XSS.replace('/', '%2F')}"]  # fmt: skip


def test_script_in_a_title_note_agent_log_or_file_name_is_escaped_on_every_page(world):
    raw = (XSS, IMG_XSS, "<script", "<img src=x")
    for path in PAGES:
        answer = world.served.get(path.format(job=world.job, ok=world.ok_item, failed=world.failed_item))
        assert answer.status_code in (200, 400, 404), (path, answer.status_code)
        assert_safe_html(answer)
        assert not any(text in answer.text.replace('<script src="/static/app.js" defer>', "") for text in raw), path
    escaped = {
        "/item/W-1": ["Write " + ESCAPED + " docs", "note:" + ESCAPED],
        "/item/W-2": ["intervention:" + ESCAPED],
        f"/item/{world.failed_item}": [ESCAPED],  # the failed agent's output, in its note and history
        f"/item/{world.ok_item}": ["&lt;img src=x onerror=alert(1)&gt;.txt", ESCAPED + " task"],  # a file name
        f"/job/{world.job}": ["fine " + ESCAPED, "web " + ESCAPED],  # execution.log, the work order's name
    }
    for path, texts in escaped.items():
        text = world.served.get(path).text
        for expected in texts:
            assert expected in text, (path, expected)
    for path in ("/api/items", f"/api/items/{world.failed_item}", f"/api/jobs/{world.job}"):
        answer = world.served.get(path)
        assert answer.headers["content-type"].startswith("application/json")  # never sniffed as HTML
        assert answer.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("name", ["progress", "throughput", "pools", "cost"])
def test_charts_are_valid_svg_without_script(world, name):
    for query in ("", f"?job={world.job}", "?job=nothing_here"):
        answer = world.served.get(f"/charts/{name}.svg{query}")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/svg+xml"
        assert "unsafe-inline" not in answer.headers["content-security-policy"]
        svg = ET.fromstring(answer.text)
        ns = "{http://www.w3.org/2000/svg}"
        assert svg.tag == f"{ns}svg" and svg.get("viewBox") == "0 0 480 200"
        assert svg.find(f"{ns}title").text
        tags = {element.tag for element in svg.iter()}
        assert f"{ns}script" not in tags and f"{ns}foreignObject" not in tags
        assert not any(attr.startswith("on") for element in svg.iter() for attr in element.attrib)
        if query == "?job=nothing_here":
            assert "no data yet" in answer.text
        elif name == "progress":
            assert svg.find(f"{ns}polyline") is not None
        else:
            assert svg.findall(f"{ns}rect")[1:], "a bar"


def test_the_script_and_style_are_served_with_their_types(world):
    script = world.served.get("/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "EventSource" in script.text and "X-Orch-Token" in script.text
    style = world.served.get("/static/style.css")
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    assert world.served.get("/static/../server.py").status_code == 404


# --- actions: like the CLI, recorded as operator@web ------------------------------------------

ACTIONS = [
    pytest.param("cancel", row("A-1"), {}, ["cancel", "--id", "A-1"], id="cancel-pending"),
    pytest.param("retry", row("A-1", "FAILED", attempts=1, notes="error:boom"), {}, ["retry", "--id", "A-1"],
                 id="retry-failed"),
    pytest.param("retry", row("A-1", "BLOCKED", attempts=1, notes="cancelled_by_operator"), {},
                 ["retry", "--id", "A-1"], id="retry-blocked"),
    pytest.param("replan", row("A-1", "BLOCKED", attempts=1, notes="intervention:which?"), {"notes": "split it; twice"},
                 ["replan", "--id", "A-1", "--notes", "split it; twice"], id="replan-blocked"),
    pytest.param("replan", row("A-1"), {"notes": "smaller"}, ["replan", "--id", "A-1", "--notes", "smaller"],
                 id="replan-pending"),
    pytest.param("reassign", row("A-1", "FAILED", attempts=1, notes="error:boom"), {"to": "other"},
                 ["reassign", "--id", "A-1", "--to", "other"], id="reassign-failed"),
]  # fmt: skip


def two_queues(tmp_path: Path, first: str) -> tuple[Path, Path]:
    rows = [first, row("A-2", title="a bystander")]
    return write_repo(tmp_path / "cli", rows, settings()), write_repo(tmp_path / "web", rows, settings())


def history(queue: Path, item_id: str) -> list[dict]:
    return [event.as_dict() for event in MarkdownStore(queue).events(item_id)]


@pytest.mark.parametrize("action, first, body, argv", ACTIONS)
def test_an_action_changes_the_queue_exactly_like_the_cli_and_records_operator_at_web(
    tmp_path, dashboards, action, first, body, argv
):
    by_cli, by_web = two_queues(tmp_path, first)
    result = CliRunner().invoke(cli, ["--queue", str(by_cli), *argv, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    served = dashboards(by_web.parent)
    answer = served.post(f"/api/items/A-1/{action}", body)
    assert answer.status_code == 200, answer.text
    assert by_web.read_text() == by_cli.read_text()  # byte for byte
    item = MarkdownStore(by_web).get("A-1")
    assert answer.json() == {"id": "A-1", "status": item.status.value, "item": item.as_dict()}
    assert answer.json()["item"] == json.loads(result.stdout)
    cli_events, web_events = history(by_cli, "A-1"), history(by_web, "A-1")
    assert [e["actor"] for e in cli_events] == ["operator@cli"] and [e["actor"] for e in web_events] == ["operator@web"]
    same = ("event", "from", "to", "note", "id")
    assert [{k: e[k] for k in same} for e in web_events] == [{k: e[k] for k in same} for e in cli_events]
    shown = served.get("/item/A-1").text
    assert "operator@web" in shown
    assert history(by_web, "A-2") == []  # nobody else moved


@pytest.mark.parametrize(
    "first, action, body, argv",
    [
        (row("A-1", "DONE", attempts=1, notes="done:1"), "cancel", {}, ["cancel", "--id", "A-1"]),
        (row("A-1", "BLOCKED", attempts=1), "cancel", {}, ["cancel", "--id", "A-1"]),
        (row("A-1"), "retry", {}, ["retry", "--id", "A-1"]),
        (row("A-1"), "reassign", {"to": "other"}, ["reassign", "--id", "A-1", "--to", "other"]),
    ],
)  # fmt: skip
def test_an_illegal_move_answers_409_with_the_clis_reason(tmp_path, dashboards, first, action, body, argv):
    by_cli, by_web = two_queues(tmp_path, first)
    before = by_web.read_bytes()
    refused = CliRunner().invoke(cli, ["--queue", str(by_cli), *argv])
    assert refused.exit_code == 1 and refused.stderr.startswith("error: ")
    answer = dashboards(by_web.parent).post(f"/api/items/A-1/{action}", body)
    assert answer.status_code == 409
    assert answer.json() == {"error": refused.stderr[len("error: ") :].strip()}
    assert by_web.read_bytes() == before and history(by_web, "A-1") == []


@pytest.mark.parametrize(
    "action, body, status",
    [
        ("replan", {"notes": "  "}, 400),
        ("replan", {}, 400),
        ("reassign", {"to": "nobody-like-that"}, 400),
        ("cancel", None, 400),  # a body that is not a JSON object
    ],
)  # fmt: skip
def test_bad_input_to_an_action_is_400_and_changes_nothing(tmp_path, dashboards, action, body, status):
    queue = write_repo(tmp_path, [row("A-1", "BLOCKED", attempts=1)], settings())
    before = queue.read_bytes()
    served = dashboards(tmp_path)
    if body is None:
        answer = httpx.post(f"{served.url}/api/items/A-1/{action}", content=b"[1, 2]",
                            headers={"X-Orch-Token": served.token})  # fmt: skip
    else:
        answer = served.post(f"/api/items/A-1/{action}", body)
    assert answer.status_code == status and answer.json()["error"]
    assert queue.read_bytes() == before


def test_an_unknown_item_is_404_for_an_action(tmp_path, dashboards):
    write_repo(tmp_path, [row("A-1")], settings())
    answer = dashboards(tmp_path).post("/api/items/B-9/cancel")
    assert answer.status_code == 404 and "B-9" in answer.json()["error"]


# --- refusals ----------------------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path, dashboards) -> Served:
    write_repo(tmp_path, [row("A-1"), row("A-2")], settings())
    return dashboards(tmp_path)


def unchanged(served: Served, before: bytes) -> bool:
    return served.queue.read_bytes() == before and not (served.root / ".orch/events.jsonl").exists()


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:{other}", "localhost:{other}",
                                  "127.0.0.1", "localhost", "", "127.0.0.1:{port}.evil.example"])  # fmt: skip
def test_a_foreign_host_header_is_421_for_pages_api_and_actions(guarded, host):
    host = host.format(port=guarded.port, other=guarded.port + 1 if guarded.port < 65535 else guarded.port - 1)
    before = guarded.queue.read_bytes()
    for path in ("/", "/api/status", "/item/A-1", "/static/app.js", "/charts/progress.svg"):
        assert guarded.get(path, headers={"Host": host}).status_code == 421, (host, path)
    assert guarded.post("/api/items/A-1/cancel", headers={"Host": host}).status_code == 421
    assert Stream(guarded.port, host=host).status == 421
    assert unchanged(guarded, before)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}"])
def test_the_loopback_names_with_the_right_port_are_answered(guarded, host):
    assert guarded.get("/api/status", headers={"Host": host.format(port=guarded.port)}).status_code == 200


@pytest.mark.parametrize("token", ["", "wrong", "{token}x", "{short}"])
def test_an_action_without_the_right_token_is_403(guarded, token):
    before = guarded.queue.read_bytes()
    answer = guarded.post("/api/items/A-1/cancel", token=token.format(token=guarded.token, short=guarded.token[:-1]))
    assert answer.status_code == 403 and "X-Orch-Token" in answer.json()["error"]
    assert unchanged(guarded, before)


def test_a_non_ascii_token_is_403_not_500(guarded):
    answer = httpx.post(f"{guarded.url}/api/items/A-1/cancel", content=b"{}",
                        headers={"X-Orch-Token": "\u00e9t\u00e9".encode("latin-1")})  # fmt: skip
    assert answer.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},
        {"Origin": "http://localhost:{port}"},  # another origin than the Host the page was loaded from
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"},
    ],
)  # fmt: skip
def test_a_cross_site_action_is_403_even_with_the_token(guarded, headers):
    before = guarded.queue.read_bytes()
    headers = {k: v.format(port=guarded.port) for k, v in headers.items()}
    answer = guarded.post("/api/items/A-1/cancel", headers=headers)
    assert answer.status_code == 403 and "refused" in answer.json()["error"]
    assert unchanged(guarded, before)


def test_a_same_origin_action_with_the_token_is_done(guarded):
    headers = {"Sec-Fetch-Site": "same-origin", "Origin": f"http://127.0.0.1:{guarded.port}"}
    assert guarded.post("/api/items/A-1/cancel", headers=headers).json()["status"] == "BLOCKED"


def test_a_body_over_the_limit_is_413_and_changes_nothing(guarded):
    before = guarded.queue.read_bytes()
    notes = "x" * web.MAX_BODY
    answer = guarded.post("/api/items/A-1/replan", {"notes": notes}, headers={"Connection": "close"})
    assert answer.status_code == 413
    assert unchanged(guarded, before)
    under = guarded.post("/api/items/A-1/replan", {"notes": "y" * (web.MAX_BODY - 100)})
    assert under.status_code == 200 and under.json()["status"] == "PENDING"


def raw_exchange(port: int, payload: bytes, wait: float = 1.0) -> bytes:
    """Send ``payload`` on one connection; everything the server answers until it goes quiet or closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(payload)
        received, deadline = b"", time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
        return received


def request(method: str, path: str, host: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    if method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_after_a_refused_post_the_next_request_on_the_connection_is_answered_right(guarded):
    host = f"127.0.0.1:{guarded.port}"
    body = json.dumps({"notes": "x" * web.MAX_BODY}).encode()
    answer = raw_exchange(guarded.port, request("POST", "/api/items/A-1/replan", host, body, X_Orch_Token=guarded.token)
                          + request("GET", "/api/status", host))  # fmt: skip
    statuses = re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)  # an answer's body does not end in a newline
    assert statuses[:1] == [b"413"]
    assert statuses[1:] in ([], [b"200"])  # closed after the refusal, or the GET answered


def test_a_request_hidden_in_the_body_of_a_refused_one_is_never_run(guarded):
    inner = request("POST", "/api/items/A-2/cancel", f"127.0.0.1:{guarded.port}", b"{}", X_Orch_Token=guarded.token)
    outer = request("POST", "/api/items/A-1/cancel", f"evil.example:{guarded.port}", inner,
                    Origin=f"http://evil.example:{guarded.port}", Content_Type="text/plain")  # fmt: skip
    before = guarded.queue.read_bytes()
    answer = raw_exchange(guarded.port, outer)
    assert answer.startswith(b"HTTP/1.1 421 ")
    assert guarded.queue.read_bytes() == before, re.findall(rb"HTTP/1\.[01] \d{3} [^\r]*", answer)


def test_the_421_answer_does_not_give_away_the_token(guarded):
    for path in ("/", "/api/status", "/nothing"):
        answer = guarded.get(path, headers={"Host": f"evil.example:{guarded.port}"})
        assert answer.status_code == 421 and guarded.token not in answer.text


def test_a_loopback_dashboard_shows_its_pages_without_a_token_and_sets_no_cookie(guarded):
    for path in ("/", "/?token=wrong", "/api/status", "/item/A-1"):
        answer = guarded.get(path)
        assert answer.status_code == 200 and "set-cookie" not in answer.headers, path
    assert Stream(guarded.port).status == 200


def test_read_only_mode_refuses_every_action_and_offers_none(tmp_path, dashboards):
    write_repo(tmp_path, [row("A-1"), row("A-2", "FAILED", attempts=1)], settings())
    served = dashboards(tmp_path, read_only=True)
    before = served.queue.read_bytes()
    for action, body in (("cancel", {}), ("retry", {}), ("replan", {"notes": "n"}), ("reassign", {"to": "other"})):
        for item_id in ("A-1", "A-2"):
            answer = served.post(f"/api/items/{item_id}/{action}", body)
            assert answer.status_code == 403 and "read-only" in answer.json()["error"]
    assert unchanged(served, before)
    page = served.get("/item/A-1").text
    assert 'data-action="' not in page and '<meta name="orch-read-only" content="1">' in page
    assert 'data-action="cancel"' in dashboards(tmp_path).get("/item/A-1").text  # the same item, not read-only


def test_every_html_answer_has_the_csp_without_unsafe_inline(guarded):
    answers = [guarded.get(path) for path in ("/", "/?status=DONE", "/item/A-1", "/nothing", "/item/bad..id")]
    answers.append(guarded.get("/", headers={"Host": "evil.example"}))
    assert [a.status_code for a in answers] == [200, 200, 200, 404, 400, 421]
    for answer in answers:
        assert_safe_html(answer)
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


# --- live updates ---------------------------------------------------------------------


def changed_at(root: Path) -> float:
    """When a CLI command changed a markdown queue: the earliest write of QUEUE.md and its event log."""
    paths = [root / "QUEUE.md", root / ".orch" / "events.jsonl"]
    return min(path.stat().st_mtime for path in paths if path.exists())


def change_from(stream: Stream, cwd: Path, *args: str, wait: float = WAIT) -> tuple[Event | None, float]:
    """Run ``orch ARGS`` in another process while reading the stream (so each event is stamped as it
    arrives); the first event, and when the process exited."""
    popen = subprocess.Popen(orch_argv(*args), cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        event = stream.next(timeout=wait)
        out, err = popen.communicate(timeout=60)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.communicate()
    assert popen.returncode == 0, err
    return event, time.time()


def test_a_stream_says_hello_then_a_change_made_by_another_process_within_a_second(tmp_path, dashboards, streams):
    queue = write_repo(tmp_path, [row("A-1")], settings())
    served = dashboards(tmp_path)
    stream = streams(served.port)
    assert stream.status == 200 and stream.headers["content-type"] == "text/event-stream"
    hello = stream.next()
    assert (hello.kind, hello.data) == ("hello", {"seq": int(hello.id)})
    change, _ = change_from(stream, tmp_path, "--queue", str(queue), "add", "--title", "from another shell")
    assert change is not None and change.kind == "change" and "queue" in change.data["what"]
    assert int(change.id) == change.data["seq"] > int(hello.id)
    assert change.at - changed_at(tmp_path) < 1.0, "the change reached the page within 1 s of its write"


def test_an_action_is_announced_on_the_stream(tmp_path, dashboards, streams):
    write_repo(tmp_path, [row("A-1")], settings())
    served = dashboards(tmp_path)
    stream = streams(served.port)
    assert stream.next().kind == "hello"
    assert served.post("/api/items/A-1/cancel").status_code == 200
    change = stream.next(timeout=WAIT)
    assert change.kind == "change" and change.data["what"] == ["queue"]


def test_a_line_appended_to_a_work_orders_log_reaches_its_page_live(tmp_path, dashboards, streams):
    queue = write_repo(tmp_path, [row("A-1")], settings())
    planned = CliRunner().invoke(cli, ["--queue", str(queue), "plan", "--name", "tail", "--count", "1"],
                                 catch_exceptions=False)  # fmt: skip
    job = re.search(r"jobs/(tail_\d{8}_\d{6})/", planned.stdout).group(1)
    served = dashboards(tmp_path)
    stream = streams(served.port)
    assert stream.next().kind == "hello"
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} | agent | tailing {XSS}"
    with (tmp_path / "jobs" / job / "execution.log").open("a", encoding="utf-8") as log:
        log.write(line + "\n")
    change = stream.next(timeout=WAIT)
    assert change is not None and change.kind == "change" and change.data["what"] == [f"job:{job}"], change
    assert served.get(f"/api/jobs/{job}").json()["log"][-1] == line  # what the page fetches on that event
    assert f"tailing {ESCAPED}" in served.get(f"/job/{job}").text


def wait_for_seq(served: Served, above: int) -> int:
    deadline = time.monotonic() + WAIT
    while served.dashboard.hub.seq <= above:
        assert time.monotonic() < deadline, "the change never reached the hub"
        time.sleep(0.02)
    return served.dashboard.hub.seq


def test_a_reconnect_with_last_event_id_gets_the_missed_change(tmp_path, dashboards, streams):
    queue = write_repo(tmp_path, [row("A-1"), row("A-2")], settings())
    served = dashboards(tmp_path)
    first = streams(served.port)
    seen = int(first.next().id)
    first.close()
    CliRunner().invoke(cli, ["--queue", str(queue), "cancel", "--id", "A-1"], catch_exceptions=False)
    now = wait_for_seq(served, seen)
    again = streams(served.port, last_id=str(seen))
    assert again.next().kind == "hello"
    missed = [again.next(timeout=2) for _ in range(now - seen)]
    assert [(e.kind, int(e.id)) for e in missed] == [("change", n) for n in range(seen + 1, now + 1)]
    assert any("queue" in e.data["what"] for e in missed)
    assert again.next(timeout=0.5) is None  # nothing twice


def test_a_reconnect_older_than_the_ring_gets_resync(tmp_path, dashboards, streams):
    write_repo(tmp_path, [row("A-1")], settings())
    served = dashboards(tmp_path)
    seen = int(streams(served.port).next().id)
    for _ in range(live.RING + 5):
        served.dashboard.hub.publish(("queue",))
    again = streams(served.port, last_id=str(seen))
    assert [again.next().kind, again.next().kind] == ["hello", "resync"]
    recent = streams(served.port, last_id=str(served.dashboard.hub.seq - 3))
    assert [recent.next().kind for _ in range(4)] == ["hello", "change", "change", "change"]


def test_a_resumed_streams_hello_does_not_skip_past_the_missed_changes(tmp_path, dashboards, streams):
    write_repo(tmp_path, [row("A-1")], settings())
    served = dashboards(tmp_path)
    seen = int(streams(served.port).next().id)
    for _ in range(3):
        served.dashboard.hub.publish(("queue",))
    hello = streams(served.port, last_id=str(seen)).next()
    assert hello.kind == "hello" and int(hello.id) <= seen  # the browser's lastEventId stays before the misses


def test_a_reconnect_after_a_server_restart_resyncs(tmp_path, dashboards, streams):
    queue = write_repo(tmp_path, [row("A-1")], settings())
    served = dashboards(tmp_path)
    stream = streams(served.port, last_id="57")  # what the old server had sent the page
    assert stream.next().kind == "hello"
    CliRunner().invoke(cli, ["--queue", str(queue), "cancel", "--id", "A-1"], catch_exceptions=False)
    event = stream.next(timeout=2)
    assert event is not None and event.kind in ("resync", "change")


def test_streams_over_the_limit_are_503(tmp_path, dashboards, streams, monkeypatch):
    monkeypatch.setattr(web, "MAX_STREAMS", 2)
    write_repo(tmp_path, [row("A-1")], settings())
    served = dashboards(tmp_path)
    held = [streams(served.port), streams(served.port)]
    assert [s.next().kind for s in held] == ["hello", "hello"]
    refused = streams(served.port)
    assert refused.status == 503
    assert served.get("/api/status").status_code == 200  # pages still answer
    held[0].close()
    served.dashboard.hub.publish(("queue",))  # the server notices a closed stream when it writes to it
    served.dashboard.hub.publish(("queue",))
    deadline = time.monotonic() + WAIT
    while (retry := streams(served.port)).status == 503:
        assert time.monotonic() < deadline, "a closed stream never gave its place back"
        served.dashboard.hub.publish(("queue",))
        time.sleep(0.05)
    assert retry.next().kind == "hello"


# --- orch serve as a process -----------------------------------------------------------


@dataclass
class Process:
    popen: subprocess.Popen
    url: str  # http://127.0.0.1:PORT/, where to reach it from here
    port: int
    printed: str = ""  # the address it printed
    token: str = ""  # the token in that address (on a remote bind)


def start_serve(cwd: Path, *args: str, serve: tuple[str, ...] = ()) -> Process:
    """``orch ARGS serve --port 0 SERVE``; without ``serve`` options it must print a loopback address."""
    argv = orch_argv(*args, "serve", "--port", "0", *serve)
    popen = subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
    line = popen.stdout.readline()  # click.echo flushes: the line comes as soon as the port is bound
    found = re.match(r"orch dashboard on (http://([^/]+):(\d+)/(?:\?token=([\w-]+))?) \(Ctrl-C stops it\)$",
                     line.strip())  # fmt: skip
    if not found or (not serve and found.group(2) != "127.0.0.1"):
        popen.kill()
        pytest.fail(f"orch serve printed {line!r}; stderr: {popen.communicate(timeout=WAIT)[1]}")
    port = int(found.group(3))
    return Process(popen, f"http://127.0.0.1:{port}/", port, found.group(1), found.group(4) or "")


@pytest.fixture
def processes():
    started: list[Process] = []

    def start(cwd: Path, *args: str, serve: tuple[str, ...] = ()) -> Process:
        started.append(start_serve(cwd, *args, serve=serve))
        return started[-1]

    yield start
    for process in started:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGINT)
            try:
                process.popen.communicate(timeout=WAIT)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.communicate()


def sqlite_queue(folder: Path) -> Path:
    db = folder / "queue.db"
    SqliteStore(db).upsert(MarkdownStore(folder / "QUEUE.md").items(), actor="test")
    return db


@pytest.mark.parametrize(
    "backend",
    ["markdown", "sqlite"],
)  # fmt: skip
def test_orch_serve_mirrors_the_cli_and_streams_its_changes(tmp_path, processes, streams, backend):
    queue = write_repo(tmp_path, [row("A-1"), row("A-2", "FAILED", attempts=1)], settings(), git=True)
    where = ["--queue", str(queue)] if backend == "markdown" else ["--db", str(sqlite_queue(tmp_path))]
    served = processes(tmp_path, *where)
    status = subprocess.run(orch_argv(*where, "status", "--json"), cwd=tmp_path, env=ENV, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert httpx.get(served.url + "api/status", timeout=WAIT).json() == json.loads(status.stdout)
    stream = streams(served.port)
    assert stream.next().kind == "hello"
    change, exited = change_from(stream, tmp_path, *where, "add", "--title", "from the CLI", "--id", "A-3", wait=3)
    assert change is not None and change.kind == "change", "no change event after orch add"
    assert change.at - exited < 1.0  # (the database's write time is not a file's: bound it by the exit)
    assert "A-3" in [i["id"] for i in httpx.get(served.url + "api/items", timeout=WAIT).json()["items"]]


def test_orch_serve_stops_cleanly_on_ctrl_c(tmp_path, processes):
    queue = write_repo(tmp_path, [row("A-1")], settings())
    served = processes(tmp_path, "--queue", str(queue))
    assert httpx.get(served.url, timeout=WAIT).status_code == 200
    served.popen.send_signal(signal.SIGINT)
    out, err = served.popen.communicate(timeout=WAIT)
    assert served.popen.returncode == 0 and "Traceback" not in err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
def test_a_non_loopback_host_without_allow_remote_is_refused(tmp_path, host):
    queue = write_repo(tmp_path, [row("A-1")], settings())
    result = CliRunner().invoke(cli, ["--queue", str(queue), "serve", "--host", host, "--port", "0"])
    assert result.exit_code == 2 and result.stdout == ""
    assert f"--host {host}" in result.stderr and "--allow-remote" in result.stderr


def test_serve_refuses_a_queue_it_cannot_read_before_listening(tmp_path):
    popen = subprocess.Popen(orch_argv("--queue", str(tmp_path / "missing.md"), "serve", "--port", "0"), env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        first = popen.stdout.readline()  # the URL line if it started, "" once it exited
        assert first == "", f"it started: {first!r}"
        assert popen.wait(WAIT) == 2 and "no such queue file" in popen.stderr.read()
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)
            popen.communicate(timeout=WAIT)


# --- a remote bind: --allow-remote --host 0.0.0.0 -------------------------------------------------


@pytest.fixture
def remote(tmp_path, dashboards) -> Served:
    write_repo(tmp_path, [row("A-1"), row("A-2")], settings())
    return dashboards(tmp_path, host="0.0.0.0", extra_hosts=("Dash.Example",))


def cookie_of(served: Served, token: str | None = None) -> str:
    return f"orch-{served.port}={served.token if token is None else token}"


def test_a_remote_dashboard_shows_nothing_without_its_token(remote):
    before = remote.queue.read_bytes()
    paths = ["/", "/item/A-1", "/api/status", "/api/items", "/api/items/A-1", "/charts/progress.svg", "/nothing"]
    for path in paths:
        for headers in ({}, {"Cookie": cookie_of(remote, "wrong")}, {"Cookie": f"orch-1={remote.token}"},
                        {"X-Orch-Token": "wrong"}):  # fmt: skip
            answer = remote.get(path, headers=headers)
            assert answer.status_code == 403 and remote.token not in answer.text, (path, headers)
        assert remote.get(f"{path}?token=wrong").status_code == 403
    assert Stream(remote.port).status == 403
    assert Stream(remote.port, extra=(f"Cookie: {cookie_of(remote, 'wrong')}",)).status == 403
    assert remote.post("/api/items/A-1/cancel", token="").status_code == 403
    assert unchanged(remote, before)


def test_a_remote_dashboards_token_url_sets_an_httponly_cookie_that_opens_pages_api_and_stream(remote):
    first = remote.get(f"/item/A-1?token={remote.token}&x=1")
    assert first.status_code == 303 and first.headers["location"] == "/item/A-1?x=1"
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(cookie_of(remote) + ";")
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
    with httpx.Client(base_url=remote.url, timeout=WAIT) as browser:
        board = browser.get(f"/?token={remote.token}", follow_redirects=True)
        assert board.status_code == 200 and str(board.url) == remote.url + "/"
        assert assert_safe_html(board).rows == ["A-1", "A-2"]
        for path in ("/item/A-1", "/api/status", "/api/items/A-1", "/charts/progress.svg", "/static/app.js"):
            assert browser.get(path).status_code == 200, path
    assert remote.get("/api/status", headers={"X-Orch-Token": remote.token}).status_code == 200  # a script's way
    stream = Stream(remote.port, extra=(f"Cookie: {cookie_of(remote)}",))
    try:
        assert stream.status == 200 and stream.next().kind == "hello"
    finally:
        stream.close()
    assert remote.post("/api/items/A-1/cancel").json()["status"] == "BLOCKED"


def test_a_remote_dashboard_answers_to_the_machines_address_and_name_and_allowed_hosts(remote):
    address, port = real_address(), remote.port
    by_address = httpx.get(f"http://{address}:{port}/api/status", headers={"X-Orch-Token": remote.token},
                           timeout=WAIT)  # fmt: skip
    assert by_address.status_code == 200 and by_address.json()["summary"]["PENDING"] == 2
    assert httpx.get(f"http://{address}:{port}/?token={remote.token}", timeout=WAIT).status_code == 303
    for host in (socket.gethostname(), "dash.example", "DASH.EXAMPLE", "0.0.0.0", "127.0.0.1"):
        answer = remote.get("/api/status", headers={"Host": f"{host}:{port}", "X-Orch-Token": remote.token})
        assert answer.status_code == 200, host
    for host in ("evil.example", f"{address}.evil.example", address, "dash.example"):
        answer = remote.get("/api/status", headers={"Host": f"{host}:{port + 1}", "X-Orch-Token": remote.token})
        assert answer.status_code == 421, host
    assert remote.get("/", headers={"Host": f"evil.example:{port}"}).status_code == 421


def test_orch_serve_on_all_addresses_prints_its_token_url_and_guards_every_page(tmp_path, processes):
    queue = write_repo(tmp_path, [row("A-1")], settings())
    served = processes(tmp_path, "--queue", str(queue), serve=("--allow-remote", "--host", "0.0.0.0",
                                                             "--allowed-host", "dash.example"))  # fmt: skip
    assert served.printed == f"http://{socket.gethostname()}:{served.port}/?token={served.token}"
    assert len(served.token) >= 32
    address = real_address()
    assert httpx.get(f"http://{address}:{served.port}/", timeout=WAIT).status_code == 403
    with httpx.Client(timeout=WAIT) as browser:
        board = browser.get(f"http://{address}:{served.port}/?token={served.token}", follow_redirects=True)
        assert board.status_code == 200 and str(board.url) == f"http://{address}:{served.port}/"
        assert browser.get(f"http://{address}:{served.port}/api/items").json()["items"][0]["id"] == "A-1"
    answer = httpx.get(f"http://127.0.0.1:{served.port}/api/status", timeout=WAIT,
                       headers={"Host": f"dash.example:{served.port}", "X-Orch-Token": served.token})  # fmt: skip
    assert answer.status_code == 200
