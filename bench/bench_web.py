"""Benchmark of ``orch serve`` (issue 9): the board on a 10,000-row queue, and how fast a change shows.

What it measures, on a generated QUEUE.md of 10,000 rows (``bench_queue.make_queue``):

- ``pass``: ``python -c pass`` with the interpreter orch runs on, the cost of
  starting Python on this machine, for scale;
- ``status``: ``orch --queue QUEUE.md status``, the whole process;
- ``GET /``: the board's first render: a new connection, the request, the
  whole HTML answer read (the server is ``orch serve --port 0``, a real process);
- ``GET /api/items`` and ``GET /api/status``: the board's JSON, likewise;
- ``GET / (kept alive)``: the board again on a kept-alive connection, as a
  page's own refreshes go (the server keeps one parsed queue per connection);

interleaved (pass, status, GET /, GET /api/items, GET /api/status, kept-alive,
pass, ...) ``--runs`` times after one untimed warm-up of each.

Then the delay of a change: a raw SSE client stays connected to
``/api/stream``; ``orch cancel --id <a PENDING id>`` runs in a subprocess
(a different id each run); the delay is from the change on disk (the earliest
modification time of QUEUE.md and .orch/events.jsonl after the cancel, the same
clock as ``time.time()``) to the client reading the ``change`` event. If
Chromium and chromedriver are installed (and not ``--no-browser``), the same
for the board in headless Chromium: from the change on disk to the row showing
BLOCKED (a MutationObserver stamps ``Date.now()``), plus the board's load time
in the browser.

Targets (issue 9): the board (``GET /``) within 3x ``orch status`` (medians);
a change visible in under 1 s (median and worst).

For context it prints an in-process breakdown of one board answer (parse,
stale check, view, HTML, JSON) on the same file.

    .venv/bin/python bench/bench_web.py [--runs N] [--quick] [--no-browser]

Stdlib only (the browser is driven over chromedriver's HTTP API with
http.client); a plain script, not a test: timings never become assertions.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from queue import Empty, Queue

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_queue import make_queue  # noqa: E402 - the issue 2 generator, shared

ROWS = 10_000
BOARD_TARGET = 3.0  # GET / <= 3x orch status
CHANGE_TARGET = 1.0  # seconds
RUN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ORCH = Path(sys.executable).with_name("orch")
CHROMIUM = os.environ.get("ORCH_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ORCH_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=RUN_ENV)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"benchmark aborted: {' '.join(argv)} exited {done.returncode}\n{done.stderr}")
    return elapsed


def fetch(port: int, path: str, connection: http.client.HTTPConnection | None = None) -> tuple[float, int]:
    """Seconds for one GET, body read to the end (a new connection unless one is given); and the size."""
    start = time.perf_counter()
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
    answer = conn.getresponse()
    body = answer.read()
    elapsed = time.perf_counter() - start
    if connection is None:
        conn.close()
    if answer.status != 200:
        sys.exit(f"benchmark aborted: GET {path} answered {answer.status}: {body[:200]!r}")
    return elapsed, len(body)


def start_server(queue: Path) -> tuple[subprocess.Popen, int]:
    popen = subprocess.Popen([str(ORCH), "--queue", str(queue), "serve", "--port", "0"], cwd=queue.parent,
                             env=RUN_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    line = popen.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not found:
        popen.kill()
        sys.exit(f"benchmark aborted: orch serve printed {line!r}: {popen.stderr.read()}")
    return popen, int(found.group(1))


def stop(popen: subprocess.Popen) -> None:
    popen.send_signal(2)  # SIGINT: orch serve stops cleanly
    try:
        popen.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.communicate()


# --- page and JSON timings -------------------------------------------------------------


def bench_board(folder: Path, queue: Path, port: int, runs: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    steps = {
        "pass": lambda: timed([sys.executable, "-c", "pass"], folder),
        "status": lambda: timed([str(ORCH), "--queue", str(queue), "status"], folder),
        "GET /": lambda: fetch(port, "/")[0],
        "GET /api/items": lambda: fetch(port, "/api/items")[0],
        "GET /api/status": lambda: fetch(port, "/api/status")[0],
    }
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    steps["GET / (kept alive)"] = lambda: fetch(port, "/", kept)[0]
    sizes = {path: fetch(port, path)[1] for path in ("/", "/api/items", "/api/status")}
    for step in steps.values():  # warm-up: bytecode, page cache, the kept connection's parsed queue
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(runs):
        for name, step in steps.items():
            times[name].append(step())
    kept.close()
    return times, sizes


# --- the delay of a change --------------------------------------------------------------


class Stream:
    """A raw SSE client on /api/stream; a thread reads it and stamps each event as it arrives."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=None)
        self.sock.sendall(f"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        self.events: Queue[tuple[str, float]] = Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if self.next_event(10) is None:
            sys.exit("benchmark aborted: no hello on the event stream")

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            at = time.time()
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                kind = re.search(rb"^event: (\w+)$", block, re.M)
                if kind:
                    self.events.put((kind.group(1).decode(), at))

    def next_event(self, timeout: float) -> tuple[str, float] | None:
        try:
            return self.events.get(timeout=timeout)
        except Empty:
            return None

    def drain(self, quiet: float = 0.6) -> None:
        """Take events until none comes for ``quiet`` seconds (the tail of the last change)."""
        while self.next_event(quiet) is not None:
            pass

    def close(self) -> None:
        self.sock.close()


def changed_at(folder: Path) -> float:
    """When the cancel changed the queue: the earliest of its files' modification times."""
    paths = [folder / "QUEUE.md", folder / ".orch" / "events.jsonl"]
    return min(path.stat().st_mtime_ns for path in paths if path.exists()) / 1e9


def cancel(queue: Path, item_id: str) -> tuple[float, float]:
    """Run ``orch cancel``; (when it started, when it exited), by time.time()."""
    started = time.time()
    timed([str(ORCH), "--queue", str(queue), "cancel", "--id", item_id], queue.parent)
    return started, time.time()


def bench_stream(queue: Path, port: int, ids: list[str], runs: int) -> dict[str, list[float]]:
    stream = Stream(port)
    stream.drain()
    found: dict[str, list[float]] = {"disk -> event": [], "cancel exit -> event": [], "cancel start -> event": []}
    for item_id in ids[:runs]:
        started, exited = cancel(queue, item_id)
        event = stream.next_event(10)
        if event is None or event[0] != "change":
            sys.exit(f"benchmark aborted: no change event within 10 s of orch cancel --id {item_id} ({event})")
        found["disk -> event"].append(event[1] - changed_at(queue.parent))
        found["cancel exit -> event"].append(event[1] - exited)
        found["cancel start -> event"].append(event[1] - started)
        stream.drain()
    stream.close()
    return found


# --- the browser (optional) --------------------------------------------------------------


class Browser:
    def __init__(self, profile: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.driver = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                if self._call("GET", "/status")["ready"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("benchmark aborted: chromedriver did not start")
            time.sleep(0.05)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={profile}", "--window-size=1280,1000"]  # fmt: skip
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})["sessionId"]
        self.call("POST", "/timeouts", {"script": 60_000, "pageLoad": 120_000})

    def _call(self, method: str, path: str, body: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=180)
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})  # fmt: skip
        answer = conn.getresponse()
        data = json.loads(answer.read() or b"{}")
        conn.close()
        if answer.status != 200:
            raise RuntimeError(f"{method} {path}: {data}")
        return data["value"]

    def call(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def js(self, script: str, *args):
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script: str, timeout: float, *args):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(script, *args)
            if value:
                return value
            time.sleep(0.02)
        return None

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.driver.terminate()
            self.driver.wait(10)


OBSERVE = """
window.benchTarget = null; window.benchSeenAt = null; window.benchFetches = [];
const realFetch = window.fetch;  // app.js calls the global fetch: wrap it to stamp each refresh's stages
window.fetch = async (...args) => {
  const entry = {start: Date.now()};
  window.benchFetches.push(entry);
  const answer = await realFetch(...args);
  entry.headers = Date.now();
  const realJson = answer.json.bind(answer);
  answer.json = async () => { const data = await realJson(); entry.parsed = Date.now(); return data; };
  return answer;
};
new MutationObserver(() => {
  if (!window.benchTarget || window.benchSeenAt) return;
  const cell = document.querySelector(`#rows tr[data-id="${window.benchTarget}"] .status`);
  if (cell && cell.firstChild.textContent === 'BLOCKED') window.benchSeenAt = Date.now();
}).observe(document.getElementById('rows'), {childList: true, subtree: true});
"""


def bench_browser(queue: Path, port: int, ids: list[str], runs: int, profile: Path) -> dict[str, list[float]]:
    browser = Browser(profile)
    names = ("board load (browser)", "disk -> row BLOCKED", "  disk -> fetch starts", "  fetch -> headers",
             "  headers -> JSON parsed", "  JSON parsed -> row shown")  # fmt: skip
    found: dict[str, list[float]] = {name: [] for name in names}
    refreshes: list[int] = []
    try:
        for _ in range(max(3, runs // 2)):
            browser.call("POST", "/url", {"url": f"http://127.0.0.1:{port}/"})
            timing = browser.js("const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd;")
            found["board load (browser)"].append(timing / 1000)
        if not browser.wait("return document.getElementById('live').textContent === 'live'", 20):
            sys.exit("benchmark aborted: the page's event stream did not connect")
        browser.js(OBSERVE)
        time.sleep(1.0)  # let the page's own first refresh (if any) finish
        for item_id in ids[:runs]:
            browser.js("window.benchTarget = arguments[0]; window.benchSeenAt = null; window.benchFetches = [];",
                       item_id)  # fmt: skip
            cancel(queue, item_id)
            seen = browser.wait("return window.benchSeenAt", 30)
            if seen is None:
                sys.exit(f"benchmark aborted: {item_id} never showed BLOCKED on the page within 30 s")
            disk = changed_at(queue.parent)
            found["disk -> row BLOCKED"].append(seen / 1000 - disk)
            time.sleep(0.8)  # the tail of this change's refreshes
            fetches = browser.js("return window.benchFetches")
            shown = [f for f in fetches if "parsed" in f and f["parsed"] <= seen] or fetches[:1]
            last = shown[-1]  # the refresh whose answer showed the row
            found["  disk -> fetch starts"].append(last["start"] / 1000 - disk)
            found["  fetch -> headers"].append((last["headers"] - last["start"]) / 1000)
            found["  headers -> JSON parsed"].append((last["parsed"] - last["headers"]) / 1000)
            found["  JSON parsed -> row shown"].append((seen - last["parsed"]) / 1000)
            refreshes.append(len(fetches))
    finally:
        browser.close()
    print(f"page refreshes (GET /api/items) per change: {refreshes}")
    return found


# --- in-process breakdown ------------------------------------------------------------------


def breakdown(queue: Path, runs: int) -> dict[str, float]:
    from orchestrator import operations
    from orchestrator.store.markdown import MarkdownStore
    from orchestrator.web import pages, views

    runtime = queue.parent / ".orch"
    samples: dict[str, list[float]] = {}

    def clock(name: str, action):
        start = time.perf_counter()
        value = action()
        samples.setdefault(name, []).append(time.perf_counter() - start)
        return value

    def one_answer() -> None:
        store = MarkdownStore(queue)  # a new connection's store: nothing parsed yet
        clock("parse (store.items, first call)", store.items)
        clock("stale check (operations.stale_items)", lambda: operations.stale_items(store, runtime))
        data = clock("views.board (cached parse)", lambda: views.board(store, runtime))
        html = clock("pages.board (HTML)", lambda: pages.board(data, "t" * 32, False))
        clock("encode HTML", html.encode)
        clock("json.dumps (api/items)", lambda: json.dumps(data, ensure_ascii=False).encode())

    for _ in range(runs):
        one_answer()
    return {name: statistics.median(values) for name, values in samples.items()}


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="timed runs of each measurement (default 9)")
    parser.add_argument("--quick", action="store_true", help="5 runs, the least the figures are reported on")
    parser.add_argument("--no-browser", action="store_true", help="skip the headless Chromium measurements")
    args = parser.parse_args()
    runs = 5 if args.quick else args.runs
    if runs < 5:
        parser.error("--runs must be at least 5 (medians of 5 or more)")
    browser = not args.no_browser and all(os.access(p, os.X_OK) for p in (CHROMIUM, CHROMEDRIVER))

    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, runs={runs}, "
          f"browser={'yes' if browser else 'no'}, {time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    print()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="orch-bench-web-") as temp:
        folder = Path(temp)
        queue = folder / "QUEUE.md"
        text, _ = make_queue(ROWS)
        queue.write_text(text, encoding="utf-8")
        pending = re.findall(r"^\| (T-\d+) \| PENDING \|", text, re.M)
        server, port = start_server(queue)
        try:
            times, sizes = bench_board(folder, queue, port, runs)
            delays = bench_stream(queue, port, pending[: runs + 1][1:], runs)
            seen = bench_browser(queue, port, pending[runs + 1 :], runs, folder / "profile") if browser else {}
        finally:
            stop(server)
        parts = breakdown(queue, runs)

    header = f"{'measurement':<26} | {'median ms':>9} | {'min ms':>8} | {'max ms':>8}"
    print(header)
    print("-" * len(header))
    for name, samples in {**times, **delays, **seen}.items():
        print(f"{name:<26} | {ms(statistics.median(samples)):>9} | {ms(min(samples)):>8} | {ms(max(samples)):>8}")
    print()
    print("answer sizes: " + ", ".join(f"GET {path} {size / 1e6:.2f} MB" for path, size in sizes.items()))

    med = {name: statistics.median(samples) for name, samples in times.items()}
    board = med["GET /"] / med["status"]
    print()
    print(f"targets on {ROWS:,} rows:")
    verdict = "MET" if board <= BOARD_TARGET else "NOT MET"
    print(f"  GET / <= {BOARD_TARGET:g}x orch status:   {board:5.2f}x  {verdict}")
    print(f"  GET /api/items / orch status:  {med['GET /api/items'] / med['status']:5.2f}x")
    for label, samples in (("change -> SSE client", delays["disk -> event"]),
                           ("change -> page shows it", seen.get("disk -> row BLOCKED"))):  # fmt: skip
        if samples:
            verdict = "MET" if max(samples) < CHANGE_TARGET else "NOT MET"
            median, worst = statistics.median(samples) * 1000, max(samples) * 1000
            print(f"  {label} < {CHANGE_TARGET:g} s: median {median:.0f} ms, worst {worst:.0f} ms  {verdict}")
    print()
    print(f"context: one board answer in process, {ROWS:,} rows (medians):")
    for name, value in parts.items():
        print(f"  {name:<38} {ms(value)} ms")
    print(f"\nwall time {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
