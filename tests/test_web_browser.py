"""``orch serve`` in a real browser: headless Chromium driven through chromedriver's W3C WebDriver API.

No new dependency: chromedriver runs as a subprocess and is spoken to with
httpx (``POST /session``, ``/url``, ``/element``, ``/execute/sync``,
``/screenshot``). The dashboard is ``orch serve --port 0`` and the work is a
real ``orch run`` with scripted agents, each a real process.

Skipped when chromium or chromedriver is missing, unless ORCH_REQUIRE_BROWSER=1
(as in CI), where that is a failure. Every wait is bounded; nothing sleeps to
let things settle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

# Collected in any Python; run where orch's dependencies are (./run-tests sets up .venv with them).
httpx = pytest.importorskip("httpx", reason="httpx is not installed in this Python: run ./run-tests")

from orchestrator import operations
from orchestrator.config import load_config
from orchestrator.errors import NotEligibleError
from orchestrator.procs import ProcessRegistry, group_alive
from orchestrator.store import open_store
from orchestrator.store.markdown import MarkdownStore
from orchestrator.web import server as web
from tests.conftest import ROOT, orch_argv, real_address
from tests.runs import PY

CHROMIUM = os.environ.get("ORCH_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ORCH_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
REQUIRE_BROWSER = os.environ.get("ORCH_REQUIRE_BROWSER") == "1"  # read on import, before the env isolation
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
WAIT = 20.0  # seconds: the bound of every wait
HEADER = (
    "| id | status | title | owner | started | attempts | max_attempts | agent | job | depends_on | notes |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)
XSS_TITLE = "<img src=x onerror=window.pwned=1> <script>window.pwned=2</script>"


def wait_until(check, what: str, timeout: float = WAIT, every: float = 0.05):
    """``check()`` until it is truthy (and return that), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {value!r})")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- WebDriver ---------------------------------------------------------------------------


class WebDriverError(Exception):
    pass


@dataclass
class Browser:
    """One Chromium session behind chromedriver, spoken to over the W3C WebDriver HTTP API."""

    http: httpx.Client
    session: str

    def call(self, method: str, path: str, body: dict | None = None):
        answer = self.http.request(method, f"/session/{self.session}{path}", json=body)
        value = answer.json()["value"]
        if answer.status_code != 200:
            raise WebDriverError(f"{method} {path}: {value.get('error')}: {value.get('message', '')[:300]}")
        return value

    def open(self, url: str) -> None:
        self.call("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return self.call("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css: str) -> None:
        self.call("POST", f"/element/{self.find(css)}/click", {})

    def js(self, script: str, *args):
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script: str, *args):
        return self.call("POST", "/execute/async", {"script": script, "args": list(args)})

    def text(self, css: str) -> str:
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", css)

    def screenshot(self, path: Path, css: str | None = None) -> bytes:
        where = f"/element/{self.find(css)}/screenshot" if css else "/screenshot"
        import base64

        data = base64.b64decode(self.call("GET", where))
        path.write_bytes(data)
        return data

    def alert(self) -> str | None:
        try:
            return self.call("GET", "/alert/text")
        except WebDriverError as error:
            if "no such alert" in str(error):
                return None
            raise


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not (path and os.access(path, os.X_OK))]
    if missing:
        if REQUIRE_BROWSER:
            pytest.fail(f"ORCH_REQUIRE_BROWSER=1 but {', '.join(missing)} is missing (apt-get install chromium "
                        "chromium-driver)")  # fmt: skip
        pytest.skip(f"no browser here ({', '.join(missing)} missing); ORCH_REQUIRE_BROWSER=1 makes this a failure")
    port = free_port()
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}", f"--log-path={log}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    def ready() -> bool:
        try:
            return http.get("/status").json()["value"]["ready"]
        except httpx.TransportError:
            return driver.poll() is not None  # gone: stop waiting, fail below

    try:
        wait_until(ready, "chromedriver to listen")
        assert driver.poll() is None, f"chromedriver exited {driver.returncode}"
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}", "--window-size=1280,1000",
                "--host-resolver-rules=MAP rebound.example 127.0.0.1"]  # fmt: skip
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}
        answer = http.post("/session", json={"capabilities": {"alwaysMatch": capabilities}})
        assert answer.status_code == 200, answer.text
        session = answer.json()["value"]["sessionId"]
        browser = Browser(http, session)
        browser.call("POST", "/timeouts", {"script": 15_000, "pageLoad": 30_000, "implicit": 0})
        yield browser
        http.delete(f"/session/{session}")
    finally:
        http.close()
        driver.terminate()
        try:
            driver.wait(10)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()


# --- a repository, orch serve and orch run ----------------------------------------------


def row(item_id: str, title: str = "a task", status: str = "PENDING") -> str:
    return f"| {item_id} | {status} | {title} | | | 0 | | | | | |\n"


def make_repo(folder: Path, rows: list[str], worker: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "QUEUE.md").write_text("# Queue\n\n" + HEADER + "".join(rows), encoding="utf-8")
    config = {"agents": {"w": worker, "s": {"kind": "command", "argv": [PY, "-c", "pass"]}}, "worker": "w",
              "supervisor": "s", "retry": {"max_attempts": 1}}  # fmt: skip
    (folder / "orch.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / ".gitignore").write_text(".orch/\nQUEUE.md.lock\n*.db\n*.db-*\n")
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.invalid"],
                 ["config", "user.name", "orch tests"], ["add", "--all"], ["commit", "-q", "-m", "init"]):  # fmt: skip
        subprocess.run(["git", "-C", str(folder), *args], check=True)
    return folder / "QUEUE.md"


@pytest.fixture
def processes():
    """``start(argv, cwd)`` -> Popen in its own session; each is interrupted, then killed, after the test."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str], cwd: Path, **options) -> subprocess.Popen:
        popen = subprocess.Popen(argv, cwd=cwd, env=ENV, text=True, start_new_session=True, **options)
        started.append(popen)
        return popen

    yield start
    for popen in started:
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)
            try:
                popen.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.communicate()


@pytest.fixture
def serve(processes):
    """``serve(root)`` -> the dashboard's base URL (``orch serve --port 0`` in root)."""

    def start(root: Path) -> str:
        popen = processes(orch_argv("--queue", str(root / "QUEUE.md"), "serve", "--port", "0"), root,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        line = popen.stdout.readline()
        found = re.match(r"orch dashboard on (http://127\.0\.0\.1:\d+/) ", line)
        assert found, f"orch serve printed {line!r}"
        return found.group(1)

    return start


def statuses(browser: Browser) -> dict[str, str]:
    return browser.js(
        "const out = {}; for (const tr of document.querySelectorAll('#rows tr[data-id]')) "
        "out[tr.dataset.id] = tr.querySelector('.status').firstChild.textContent; return out;"
    )


WATCH_ROWS = """
window.orchMark = arguments[0];
window.orchSeen = {};
const note = () => {
  for (const tr of document.querySelectorAll('#rows tr[data-id]')) {
    const seen = (window.orchSeen[tr.dataset.id] ||= []);
    const now = tr.querySelector('.status').firstChild.textContent;
    if (seen[seen.length - 1] !== now) seen.push(now);
  }
};
note();
new MutationObserver(note).observe(document.getElementById('rows'), {childList: true, subtree: true});
"""


def no_injected_markup(browser: Browser) -> bool:
    injected = "document.querySelectorAll('main script, main img:not(.chart)').length"
    return browser.js(f"return window.pwned === undefined && {injected} === 0")


# --- the tests -----------------------------------------------------------------------------


def test_the_board_follows_a_real_run_live_without_reloading(tmp_path, browser, serve, processes):
    worker = {"kind": "scripted", "steps": [{"write": {"out.txt": "x\n"}, "say": "working", "sleep": 1}]}
    queue = make_repo(tmp_path, [row("L-1", XSS_TITLE), row("L-2"), row("L-3")], worker)
    url = serve(tmp_path)
    browser.open(url)
    wait_until(lambda: browser.text("#live") == "live", "the event stream to connect")
    assert statuses(browser) == {"L-1": "PENDING", "L-2": "PENDING", "L-3": "PENDING"}
    assert no_injected_markup(browser) and browser.alert() is None
    mark = f"mark-{time.time()}"
    browser.js(WATCH_ROWS, mark)
    before = browser.js("return document.body.dataset.refreshed || ''")
    run = processes(orch_argv("--queue", str(queue), "run"), tmp_path, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)  # fmt: skip
    wait_until(lambda: "IN_PROGRESS" in statuses(browser).values(), "a row to turn IN_PROGRESS on the page")
    wait_until(lambda: set(statuses(browser).values()) == {"DONE"}, "every row to turn DONE on the page")
    out, err = run.communicate(timeout=WAIT)
    assert run.returncode == 0, err
    seen = browser.js("return window.orchSeen")
    assert seen == {item: ["PENDING", "IN_PROGRESS", "DONE"] for item in ("L-1", "L-2", "L-3")}, seen
    # the same document all along: the mark survived, one navigation, refreshed by the script
    assert browser.js("return window.orchMark") == mark
    assert browser.js("return performance.getEntriesByType('navigation').length") == 1
    refreshed = browser.js("return document.body.dataset.refreshed || ''")
    assert refreshed and refreshed != before and int(refreshed) > time.time() * 1000 - 60_000
    assert browser.text('[data-count="DONE"]') == "3" and browser.text('[data-count="PENDING"]') == "0"
    assert browser.text('#rows tr[data-id="L-1"] td:nth-child(3)') == XSS_TITLE  # shown as text
    assert no_injected_markup(browser) and browser.alert() is None
    assert {item.status.value for item in MarkdownStore(queue).items()} == {"DONE"}


def test_cancel_on_a_running_items_page_blocks_it_and_stops_its_agent(tmp_path, browser, serve, processes):
    worker = {"kind": "scripted", "steps": [{"say": "thinking for a long time", "sleep": 120}]}
    queue = make_repo(tmp_path, [row("C-1", "a long task")], worker)
    url = serve(tmp_path)
    run = processes(orch_argv("--queue", str(queue), "run"), tmp_path, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)  # fmt: skip
    registry = ProcessRegistry(tmp_path / ".orch")
    [agent] = wait_until(lambda: [e for e in registry.entries() if e.item_id == "C-1" and e.role == "worker"],
                         "the worker agent to start")  # fmt: skip
    assert group_alive(agent.pgid)
    browser.open(f"{url}item/C-1")
    wait_until(lambda: browser.text("#live") == "live", "the event stream to connect")
    assert browser.text('dd[data-field="status"]') == "IN_PROGRESS"
    browser.js("window.orchMark = 'before cancel'")
    browser.click('button[data-action="cancel"]')
    wait_until(lambda: browser.text("#message") == "C-1 -> BLOCKED", "the page to confirm the cancel")
    wait_until(lambda: browser.text('dd[data-field="status"]') == "BLOCKED", "the status to turn BLOCKED")
    wait_until(lambda: "operator@web CANCELED IN_PROGRESS → BLOCKED" in browser.text("#history"),
               "the history to show who cancelled")  # fmt: skip
    assert browser.js("return window.orchMark") == "before cancel"  # no reload
    wait_until(lambda: not group_alive(agent.pgid), "the agent's process group to stop", timeout=10)
    out, err = run.communicate(timeout=WAIT)  # the runner notices, releases, and ends
    item = MarkdownStore(queue).get("C-1")
    assert item.status.value == "BLOCKED" and "cancelled_by_operator" in item.notes
    assert [e.actor for e in MarkdownStore(queue).events("C-1") if e.event == "CANCELED"] == ["operator@web"]
    assert registry.entries() == []
    wait_until(lambda: "cancelled_by_operator" in (browser.text("#notes") or ""), "the note on the page")


def test_an_illegal_action_shows_the_409_reason_on_the_page(tmp_path, browser, serve):
    quiet = {"kind": "command", "argv": [PY, "-c", "pass"]}
    queue = make_repo(tmp_path, [row("D-1", "shipped already", "DONE"), row("D-2")], quiet)
    copy = tmp_path / "copy" / "QUEUE.md"
    copy.parent.mkdir()
    copy.write_bytes(queue.read_bytes())
    with pytest.raises(NotEligibleError) as refused:  # the reason the CLI gives, on a copy of the queue
        operations.retry(MarkdownStore(copy), "D-1")
    url = serve(tmp_path)
    before = queue.read_bytes()
    browser.open(f"{url}item/D-1")
    wait_until(lambda: browser.text("#live") == "live", "the event stream to connect")
    browser.js("window.orchMark = 'before retry'")
    browser.click('button[data-action="retry"]')
    wait_until(lambda: browser.text("#message") == str(refused.value), "the page to show why the retry was refused")
    answers = browser.js(
        "return performance.getEntriesByType('resource')"
        ".filter((e) => e.name.endsWith('/api/items/D-1/retry')).map((e) => e.responseStatus)"
    )
    assert answers == [409]
    assert browser.js("return document.getElementById('message').className") == "message"  # not shown as done
    assert browser.text('dd[data-field="status"]') == "DONE" and browser.js("return window.orchMark") == "before retry"
    assert queue.read_bytes() == before


def png(data: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct pixel bytes of a PNG; fails unless it is one."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    chunks, at = {}, 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        body, crc = data[at + 8 : at + 8 + length], data[at + 8 + length : at + 12 + length]
        assert struct.unpack(">I", crc)[0] == zlib.crc32(kind + body), f"bad CRC in {kind}"
        chunks[kind] = chunks.get(kind, b"") + body
        at += 12 + length
    assert b"IHDR" in chunks and b"IEND" in chunks
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    pixels = zlib.decompress(chunks[b"IDAT"])
    return width, height, len(set(pixels))


def test_screenshots_of_the_board_and_the_charts_are_real_pngs(tmp_path, browser, serve):
    quick = {"kind": "scripted", "steps": [{"write": {"out.txt": "x\n"}, "say": "done"}]}
    queue = make_repo(tmp_path, [row("S-1", "a first task")], quick)
    planned = subprocess.run(orch_argv("--queue", str(queue), "plan", "--name", "shots", "--count", "3"),
                             cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60)  # fmt: skip
    job = re.search(r"jobs/(shots_\d{8}_\d{6})/", planned.stdout).group(1)
    for argv in (["dispatch", f"jobs/{job}/work_order.yaml"], ["run", "--job", job, "--workers", "2"]):
        done = subprocess.run(orch_argv("--queue", str(queue), *argv), cwd=tmp_path, env=ENV, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
    url = serve(tmp_path)
    all_charts_drawn = "return [...document.images].every((i) => i.complete && i.naturalWidth > 0)"

    browser.open(url)
    wait_until(lambda: browser.js(all_charts_drawn), "the board's charts to load")
    board = browser.screenshot(tmp_path / "board.png")
    charts = browser.screenshot(tmp_path / "charts.png", "section.charts")
    browser.open(f"{url}job/{job}")
    wait_until(lambda: browser.js(all_charts_drawn), "the work order's chart to load")
    assert browser.text("#job-status") == "COMPLETED" and browser.text("#job-counts").startswith("3/3 done")
    order = browser.screenshot(tmp_path / "work_order.png")
    progress = browser.screenshot(tmp_path / "progress.png", "img.chart")

    for name, data, at_least in (("board", board, (800, 600)), ("charts", charts, (400, 150)),
                                 ("work_order", order, (800, 600)), ("progress", progress, (300, 120))):  # fmt: skip
        assert (tmp_path / f"{name}.png").read_bytes() == data
        width, height, shades = png(data)
        assert width >= at_least[0] and height >= at_least[1], (name, width, height)
        assert len(data) > 2_000 and shades > 32, (name, len(data), shades)  # drawn, not a blank page
    drawn = browser.js("const i = document.querySelector('img.chart'); return [i.naturalWidth, i.naturalHeight]")
    assert drawn == [480, 200]


def test_a_page_refused_a_stream_falls_back_to_polling(tmp_path, browser, monkeypatch):
    monkeypatch.setattr(web, "MAX_STREAMS", 0)  # every stream is refused, as when 32 are open
    queue = make_repo(tmp_path, [row("P-1"), row("P-2")], {"kind": "command", "argv": [PY, "-c", "pass"]})
    config = load_config(tmp_path)
    dashboard = web.Dashboard(tmp_path, lambda: open_store(queue=queue, policy=config.retry), config)
    server = web.make_server(dashboard)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        browser.open(f"http://127.0.0.1:{dashboard.port}/")
        wait_until(lambda: browser.text("#live") == "polling", "the page to fall back to polling", timeout=3)
        operations.cancel(MarkdownStore(queue), "P-1")
        wait_until(lambda: statuses(browser).get("P-1") == "BLOCKED", "a poll to show the change", timeout=6)
    finally:
        server.shutdown()
        dashboard.hub.stop()
        server.server_close()
        thread.join(10)


def test_a_remote_dashboard_opened_by_its_token_url_keeps_the_token_in_an_httponly_cookie_and_stays_live(
    tmp_path, browser
):
    queue = make_repo(tmp_path, [row("T-1"), row("T-2")], {"kind": "command", "argv": [PY, "-c", "pass"]})
    config = load_config(tmp_path)
    dashboard = web.Dashboard(tmp_path, lambda: open_store(queue=queue, policy=config.retry), config, host="0.0.0.0")
    server = web.make_server(dashboard)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://{real_address()}:{dashboard.port}/"
    try:
        browser.open(base)
        assert browser.js("return document.title").startswith("403")
        browser.open(f"{base}?status=PENDING&token={dashboard.token}")
        assert browser.js("return location.href") == f"{base}?status=PENDING"  # the token left the address bar
        wait_until(lambda: browser.text("#live") == "live", "the event stream to connect with the cookie")
        assert browser.js("return document.cookie") == ""  # HttpOnly: no script reads it
        operations.cancel(MarkdownStore(queue), "T-1")
        wait_until(lambda: "T-1" not in statuses(browser), "the filtered board to drop the cancelled row live")
    finally:
        server.shutdown()
        dashboard.hub.stop()
        server.server_close()
        thread.join(10)


def test_a_dns_rebinding_page_cannot_make_the_dashboard_act(tmp_path, browser, serve):
    queue = make_repo(tmp_path, [row("R-1"), row("R-2")], {"kind": "command", "argv": [PY, "-c", "pass"]})
    url = serve(tmp_path)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    browser.open(f"http://rebound.example:{port}/")  # the attacker's name, resolving to 127.0.0.1
    assert browser.js("return document.title").startswith("421")
    before = queue.read_bytes()
    outcome = browser.js_async(
        """
        const [port, done] = [arguments[0], arguments[arguments.length - 1]];
        (async () => {
          const page = await (await fetch('/')).text();
          const token = (/name="orch-token" content="([^"]+)"/.exec(page) || [])[1] || '';
          const inner = `POST /api/items/R-2/cancel HTTP/1.1\\r\\nHost: 127.0.0.1:${port}\\r\\n` +
                        `X-Orch-Token: ${token}\\r\\nContent-Length: 2\\r\\n\\r\\n{}`;
          const answer = await fetch('/api/items/R-1/cancel', {method: 'POST', body: inner});
          done({token: token !== '', status: answer.status});
        })().catch((error) => done({error: String(error)}));
        """,
        port,
    )
    changed = time.monotonic() + 3  # the server runs a hidden request after answering the outer one
    while queue.read_bytes() == before and time.monotonic() < changed:
        time.sleep(0.05)
    assert queue.read_bytes() == before, json.dumps(outcome)
