"""``orch serve``: a local web dashboard, live, with the operator actions.

The standard library's threaded HTTP server is enough (with Nagle off, or
each answer waits ~40 ms for TCP). It can stop agents and rewrite the queue,
so it guards itself:

- it binds 127.0.0.1 unless ``--allow-remote``, and a POST always needs the
  per-process token (the page carries it; ``X-Orch-Token``);
- on any other address every request needs the token, pages and the event
  stream too: the URL ``orch serve`` prints carries it once (``?token=``), which
  sets an HttpOnly, SameSite=Strict cookie and redirects to the same page
  without it; so reaching the port is not enough to read the page's token;
- a Host header not on the allowlist gets 421 (against DNS rebinding); on a
  non-loopback bind the list also has the address the request came in on, the
  machine's name and every ``--allowed-host``;
- cross-site requests are refused by Origin and Sec-Fetch-Site;
- a content security policy allows no inline script, and every text an agent
  or a person wrote is escaped;
- request bodies and the number of live streams are bounded.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from functools import cache
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

from orchestrator import operations
from orchestrator.errors import AbsentError, BadInputError, OrchError, RefusedError
from orchestrator.web import pages, views
from orchestrator.web.live import Hub, file_marks

STATIC = Path(__file__).parent / "static"
MAX_BODY = 16 * 1024
MAX_STREAMS = 32
STREAM_SECONDS = 300.0
ACTOR = "operator@web"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@cache
def machine_names() -> tuple[str, ...]:
    """This machine's host name and fully qualified name (looked up once: a lookup may ask DNS)."""
    return (socket.gethostname(), socket.getfqdn())


@dataclass
class Dashboard:
    """Everything a request needs: where the queue is, the token, the live hub."""

    root: Path
    open_store: object  # () -> Store, one per thread
    config: object
    host: str = "127.0.0.1"
    port: int = 0
    read_only: bool = False
    extra_hosts: tuple[str, ...] = ()  # --allowed-host: more names the dashboard answers for
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    hub: Hub | None = None
    streams: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    local: threading.local = field(default_factory=threading.local)

    @property
    def runtime(self) -> Path:
        return self.root / ".orch"

    def store(self):
        if not hasattr(self.local, "store"):
            self.local.store = self.open_store()
        return self.local.store

    @property
    def remote(self) -> bool:
        """Bound to an address other machines can reach: every request then needs the token."""
        return self.host not in LOOPBACK

    @property
    def cookie(self) -> str:
        return f"orch-{self.port}"  # a browser keeps cookies per host, not per port: one per dashboard

    def allowed_hosts(self, port: int, local: str = "") -> set[str]:
        """Host headers answered; ``local`` is the address the request came in on (on a remote bind)."""
        names = {"127.0.0.1", "localhost", "[::1]", self.host, *self.extra_hosts}
        if self.remote:
            names |= {*machine_names(), f"[{local}]" if ":" in local else local} - {""}
        names = {name.lower() for name in names}
        return {f"{name}:{port}" for name in names} | (names if port in (80, 443) else set())

    def url(self) -> str:
        """Where to open the dashboard; on a remote bind with the token, which the first visit turns into a
        cookie."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/" + (f"?{urlencode({'token': self.token})}" if self.remote else "")

    def sources(self) -> dict[str, object]:
        """Fingerprints of what the pages show: the queue, the runs, each job's files."""
        store = self.store()
        marks: dict[str, object] = {}
        if not hasattr(store, "version"):  # a markdown queue: its files (a database's commits go to its -wal file,
            # so a database is fingerprinted by its newest event instead)
            marks["queue"] = file_marks([Path(store.path), self.runtime / "events.jsonl", self.runtime / "leases.json"])
        else:
            marks["queue"] = store.version()
        runs = self.runtime / "runs"
        marks["runs"] = file_marks(sorted(runs.glob("*/*/job_manifest.json"))) if runs.is_dir() else ()
        for job_id in views.jobs(self.root):
            folder = self.root / "jobs" / job_id
            marks[f"job:{job_id}"] = file_marks([folder / "execution.log", folder / "results.jsonl"])
        return marks


class Refused(Exception):
    """An HTTP refusal with its status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


ROUTES: list[tuple[str, re.Pattern, str]] = [
    ("GET", re.compile(r"^/$"), "board"),
    ("GET", re.compile(r"^/item/(?P<id>[^/]+)$"), "item_page"),
    ("GET", re.compile(r"^/job/(?P<id>[^/]+)$"), "job_page"),
    ("GET", re.compile(r"^/static/(?P<name>app\.js|style\.css)$"), "static"),
    ("GET", re.compile(r"^/charts/(?P<name>progress|throughput|pools|cost)\.svg$"), "chart"),
    ("GET", re.compile(r"^/api/status$"), "api_status"),
    ("GET", re.compile(r"^/api/workers$"), "api_workers"),
    ("GET", re.compile(r"^/api/items$"), "api_items"),
    ("GET", re.compile(r"^/api/items/(?P<id>[^/]+)$"), "api_item"),
    ("GET", re.compile(r"^/api/jobs/(?P<id>[^/]+)$"), "api_job"),
    ("GET", re.compile(r"^/api/stream$"), "stream"),
    ("POST", re.compile(r"^/api/items/(?P<id>[^/]+)/(?P<action>cancel|retry|replan|reassign)$"), "action"),
]


class Handler(BaseHTTPRequestHandler):
    """One request: check it, route it, answer it."""

    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "orch"
    dashboard: Dashboard

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        pass  # quiet: the terminal belongs to the operator

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            self._check_host()
            if self.dashboard.remote and self._sign_in(method, url):
                return
            for verb, pattern, name in ROUTES:
                match = pattern.match(url.path)
                if match and verb == method:
                    if method == "POST":
                        self._check_post()
                    getattr(self, name)(**{k: unquote(v) for k, v in match.groupdict().items()})
                    return
            raise Refused(404, f"no page at {url.path}")
        except Refused as refusal:
            self._error(refusal.status, str(refusal))
        except AbsentError as error:
            self._error(404, str(error))
        except RefusedError as error:
            self._error(409, str(error))
        except BadInputError as error:
            self._error(400, str(error))
        except OrchError as error:
            self._error(409, str(error))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # a bug: answer 500 and leave the traceback on the server's stderr
            traceback.print_exc()
            self._error(500, "internal error; see the server's output")

    # --- guards -----------------------------------------------------------------------

    def _check_host(self) -> None:
        host = self.headers.get("Host", "")
        local = self.connection.getsockname()[0] if self.dashboard.remote else ""
        if host.lower() not in self.dashboard.allowed_hosts(self.server.server_address[1], local):
            raise Refused(421, f"this server does not answer for host {host!r}")

    def _is_token(self, sent: str) -> bool:
        return secrets.compare_digest(sent.encode("latin-1", "replace"), self.dashboard.token.encode())

    def _sign_in(self, method: str, url) -> bool:
        """A remote bind's gate: the cookie, the X-Orch-Token header, or ``?token=`` on a GET, which sets the
        cookie and redirects to the same address without it (True: answered)."""
        d = self.dashboard
        try:
            jar = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            jar = SimpleCookie()
        if d.cookie in jar and self._is_token(jar[d.cookie].value):
            return False
        if "X-Orch-Token" in self.headers and self._is_token(self.headers["X-Orch-Token"]):
            return False
        if method == "GET" and "token" in self.query and self._is_token(self.query["token"]):
            rest = urlencode([(k, v) for k, v in parse_qsl(url.query, keep_blank_values=True) if k != "token"])
            cookie = f"{d.cookie}={d.token}; Path=/; HttpOnly; SameSite=Strict"
            self._send(303, b"", "text/plain", {"Location": url.path + (f"?{rest}" if rest else ""),
                                               "Set-Cookie": cookie})  # fmt: skip
            return True
        raise Refused(403, "this dashboard needs its token: open the address orch serve printed (with ?token=)")

    def _check_post(self) -> None:
        if self.dashboard.read_only:
            raise Refused(403, "the dashboard is read-only (started with --read-only)")
        site = self.headers.get("Sec-Fetch-Site")
        if site not in (None, "same-origin", "none"):
            raise Refused(403, "cross-site request refused")
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != self.headers.get("Host"):
            raise Refused(403, "cross-origin request refused")
        if not self._is_token(self.headers.get("X-Orch-Token", "")):
            raise Refused(403, "missing or wrong X-Orch-Token")

    def _body(self) -> dict:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise Refused(400, "bad Content-Length") from None
        if length < 0:
            raise Refused(400, "bad Content-Length")
        if length > MAX_BODY:
            raise Refused(413, f"request body over {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b"{}"
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise Refused(400, "the body must be JSON") from None
        if not isinstance(data, dict):
            raise Refused(400, "the body must be a JSON object")
        return data

    # --- answers ----------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        headers = {
            "Content-Type": content_type, "Content-Length": str(len(body)), "Cache-Control": "no-store",
            "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", **(extra or {}),
        }  # fmt: skip
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: object, status: int = 200) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _html(self, text: str, status: int = 200) -> None:
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        # A refused request's body may be unread: close, so it is never parsed as the next request.
        self.close_connection = True
        if self.path.startswith("/api/"):
            body, kind = json.dumps({"error": message}, ensure_ascii=False).encode(), "application/json; charset=utf-8"
        else:  # no token on an error page: a 421 goes to a host that must not learn it
            body, kind = pages.error_page(status, message, "").encode(), "text/html; charset=utf-8"
        self._send(status, body, kind, {"Connection": "close"})

    # --- pages and API ----------------------------------------------------------------

    def board(self) -> None:
        d = self.dashboard
        data = views.board(d.store(), d.runtime, self.query.get("status", ""), self.query.get("owner", ""),
                           self.query.get("job", ""))  # fmt: skip
        self._html(pages.board(data, d.token, d.read_only))

    def item_page(self, id: str) -> None:  # noqa: A002
        d = self.dashboard
        self._html(pages.item_page(views.item(d.store(), d.runtime, d.root, id), d.token, d.read_only))

    def job_page(self, id: str) -> None:  # noqa: A002
        d = self.dashboard
        self._html(pages.job_page(views.job(d.store(), d.root, id), d.token, d.read_only))

    def static(self, name: str) -> None:
        path = STATIC / name
        self._send(200, path.read_bytes(), TYPES[path.suffix])

    def chart(self, name: str) -> None:
        svg = views.chart(self.dashboard.root, name, self.query.get("job", ""))
        self._send(200, svg.encode(), "image/svg+xml")

    def api_status(self) -> None:
        self._json(views.status(self.dashboard.store(), self.dashboard.runtime))

    def api_workers(self) -> None:
        self._json(views.workers(self.dashboard.store(), self.dashboard.runtime))

    def api_items(self) -> None:
        d = self.dashboard
        self._json(views.board(d.store(), d.runtime, self.query.get("status", ""), self.query.get("owner", ""),
                               self.query.get("job", "")))  # fmt: skip

    def api_item(self, id: str) -> None:  # noqa: A002
        d = self.dashboard
        self._json(views.item(d.store(), d.runtime, d.root, id))

    def api_job(self, id: str) -> None:  # noqa: A002
        self._json(views.job(self.dashboard.store(), self.dashboard.root, id))

    def action(self, id: str, action: str) -> None:  # noqa: A002
        d = self.dashboard
        body, store = self._body(), d.store()
        if action == "cancel":
            item = operations.cancel_many(store, d.runtime, item_id=id, actor=ACTOR)[0]
        elif action == "retry":
            item = operations.retry(store, id, actor=ACTOR)
        elif action == "replan":
            item = operations.replan(store, id, str(body.get("notes", "")), actor=ACTOR)
        else:
            item = operations.reassign(store, id, str(body.get("to", "")), list(d.config.agents), actor=ACTOR)
        if d.hub is not None:
            d.hub.publish(("queue",))
        self._json({"id": item.id, "status": item.status.value, "item": item.as_dict()})

    # --- live updates -----------------------------------------------------------------

    def stream(self) -> None:
        d = self.dashboard
        with d.lock:
            if d.streams >= MAX_STREAMS:
                raise Refused(503, f"too many live streams (at most {MAX_STREAMS})")
            d.streams += 1
        try:
            self._stream_events(d.hub)
        finally:
            with d.lock:
                d.streams -= 1

    def _stream_events(self, hub: Hub) -> None:
        self.send_response(200)
        for name, value in (("Content-Type", "text/event-stream"), ("Cache-Control", "no-store"),
                            ("Content-Security-Policy", CSP), ("X-Accel-Buffering", "no")):  # fmt: skip
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        last = self.headers.get("Last-Event-ID")
        seq = int(last) if last and last.isdigit() else hub.seq
        self._write_event("hello", seq, {"seq": hub.seq})  # the resume point: the misses follow
        if last and hub.since(seq) is None:
            self._write_event("resync", hub.seq, {"seq": hub.seq})
            seq = hub.seq
        deadline = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < deadline and not hub.stopping.is_set():
            changes = hub.wait(seq, timeout=15)
            if changes is None:
                self._write_event("resync", hub.seq, {"seq": hub.seq})
                seq = hub.seq
                continue
            if not changes:
                self.wfile.write(b": still here\n\n")
                self.wfile.flush()
                continue
            for change in changes:
                self._write_event("change", change.seq, {"seq": change.seq, "what": list(change.what)})
                seq = change.seq

    def _write_event(self, kind: str, seq: int, data: dict) -> None:
        self.wfile.write(f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data)}\nretry: 1000\n\n".encode())
        self.wfile.flush()


def make_server(dashboard: Dashboard) -> ThreadingHTTPServer:
    """The HTTP server for a dashboard (port 0 picks a free port)."""
    handler = type("DashboardHandler", (Handler,), {"dashboard": dashboard})
    server = ThreadingHTTPServer((dashboard.host, dashboard.port), handler)
    server.daemon_threads = True
    dashboard.port = server.server_address[1]
    dashboard.hub = Hub(dashboard.sources)
    dashboard.hub.start()
    return server
