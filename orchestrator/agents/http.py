"""What the HTTP model agents share: abortable requests, retries, rate limits, edits, verdicts.

A request runs on a helper thread while the step waits for it, its deadline or
a cancel. On a timeout or cancel the connection's socket is shut down at once
(closing an httpx client from another thread does not wake a blocked read),
so nothing is left waiting on the server. 5xx answers and connection errors
are retried a few times with backoff; a 429 is waited out as its
``Retry-After`` or rate-limit headers say, without counting as a retry or
against the step's timeout (only the job's bounds it), so it does not use up
the item's attempt; ``insufficient_quota`` is final.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import random
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpcore
import httpx

from orchestrator.agents.base import StepRequest, StepResult
from orchestrator.agents.limits import Deadlines, duration, pause, wait_out
from orchestrator.config import AgentConfig
from orchestrator.errors import AgentCancelledError, AgentError, AgentTimeoutError, ConfigError

T = TypeVar("T")
POLL_SECONDS = 0.05
CONTEXT_LIMIT = 40_000

VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["SUCCESS", "CONTINUE", "INTERVENTION_REQUIRED"]},
        "reason": {"type": "string"},
        "feedback": {"type": "string"},
    },
    "required": ["verdict", "reason", "feedback"],
}
EDITS_SCHEMA = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["path", "content"],
            },
        },
    },
    "required": ["summary", "files"],
}
ROLE_INSTRUCTIONS = {
    "worker": 'Answer with one JSON object: {"summary": what you did, "files": [{"path": relative path, '
    '"content": the whole new file}]}. Only the files you list are written.',
    "supervisor": 'Answer with one JSON object: {"verdict": "SUCCESS" | "CONTINUE" | '
    '"INTERVENTION_REQUIRED", "reason": why, "feedback": what the worker should do next}.',
}


class RetryableError(Exception):
    """A 5xx answer or a broken connection: worth another try."""


class RateLimited(Exception):
    """A 429: wait ``seconds`` and try again, without counting it as a retry."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"rate limited for {seconds:g}s")


# --- abortable requests -----------------------------------------------------------


class _RecordingBackend(httpcore.SyncBackend):
    """Remembers every socket it opens, so another thread can shut them down."""

    def __init__(self) -> None:
        self.streams: list = []
        self.aborted = False
        self.lock = threading.Lock()

    def connect_tcp(self, *args: Any, **kwargs: Any):
        stream = super().connect_tcp(*args, **kwargs)
        with self.lock:
            self.streams.append(stream)
            aborted = self.aborted
        if aborted:
            _shutdown(stream)
        return stream

    def abort(self) -> None:
        with self.lock:
            self.aborted = True
            streams = list(self.streams)
        for stream in streams:
            _shutdown(stream)


def _shutdown(stream: Any) -> None:
    sock = stream.get_extra_info("socket")
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class AbortableTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool whose sockets ``abort()`` shuts down."""

    def __init__(self) -> None:
        super().__init__()
        self.backend = _RecordingBackend()
        self._pool = httpcore.ConnectionPool(network_backend=self.backend)  # httpx keeps its pool here


def call_abortable(request: StepRequest, deadline: float, work: Callable[[httpx.Client, float], T]) -> T:
    """Run ``work(client, timeout)`` on a thread; stop it at once on cancel or at ``deadline``."""
    transport = AbortableTransport()
    client = httpx.Client(transport=transport, timeout=max(0.001, deadline - time.monotonic()))
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = work(client, max(0.001, deadline - time.monotonic()))
        except BaseException as error:  # handed to the waiting thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(POLL_SECONDS)
            if request.cancel.is_set():
                transport.backend.abort()
                raise AgentCancelledError(f"{request.role} step {request.step} cancelled mid-request")
            if time.monotonic() >= deadline:
                transport.backend.abort()
                raise AgentTimeoutError(f"the model did not answer within {request.timeout_s:g}s", request.timeout_s)
    finally:
        client.close()
    if "error" in box:
        raise box["error"]
    return box["value"]


# --- rate limits ------------------------------------------------------------------


def parse_wait(headers: httpx.Headers, now: float | None = None) -> float:
    """Seconds a 429 asks us to wait: Retry-After (seconds or a date), else rate-limit reset headers."""
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                moment = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                moment = None  # neither seconds nor a date: use the reset headers or the default
            if moment is not None:
                return max(0.0, moment.timestamp() - (now or time.time()))
    waits = [duration(headers[name]) for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens",
                                                   "ratelimit-reset") if name in headers]  # fmt: skip
    waits = [wait for wait in waits if wait is not None]
    return max(waits) if waits else 1.0


def with_retries(request: StepRequest, deadlines: Deadlines, max_retries: int, attempt: Callable[[], T],
                 rng: random.Random, on_rate_limit: Callable[[float], None] | None = None) -> T:  # fmt: skip
    """Call ``attempt`` again after 5xx/connection errors (capped) and after 429 waits (until the job's end).

    A rate-limit wait does not count against the step's timeout: ``deadlines.step`` moves on by the wait.
    """
    failures = 0
    while True:
        try:
            return attempt()
        except RateLimited as limit:
            wait_out(request, deadlines, limit.seconds, on_rate_limit)
            continue
        except RetryableError as error:
            failures += 1
            if failures > max_retries:
                raise AgentError(f"gave up after {failures} tries: {error}") from None
            wait = min(30.0, 0.5 * 2 ** (failures - 1)) * (0.5 + rng.random())
        if time.monotonic() + wait >= deadlines.step:
            raise AgentTimeoutError(f"no answer before the step's {request.timeout_s:g}s ran out", request.timeout_s)
        pause(request, wait)


def check_status(response: httpx.Response, describe: Callable[[httpx.Response], tuple[str, str]]) -> None:
    """Raise for an unsuccessful answer: retryable 5xx, rate limits, or a final AgentError."""
    if response.status_code < 400:
        return
    kind, message = describe(response)
    if response.status_code == 429 and kind != "insufficient_quota":
        raise RateLimited(parse_wait(response.headers))
    if response.status_code >= 500:
        raise RetryableError(f"HTTP {response.status_code}: {message}")
    raise AgentError(f"HTTP {response.status_code} {kind}: {message}".strip())


# --- the step around a model call ---------------------------------------------------


def workdir_context(workdir: Path, limit: int = CONTEXT_LIMIT) -> str:
    """The worktree's files, and the text of the small ones, for a model that cannot look itself."""
    listed = subprocess.run(["git", "ls-files"], cwd=workdir, capture_output=True, text=True).stdout.split()
    parts = ["Files in the repository:\n" + "\n".join(listed[:300])]
    used = len(parts[0])
    for name in listed:
        path = workdir / name
        if name.startswith(".orch-evidence/") or not path.is_file() or path.stat().st_size > 8000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        block = f"\n--- {name} ---\n{text}"
        if used + len(block) > limit:
            break
        parts.append(block)
        used += len(block)
    return "".join(parts)


def apply_edits(workdir: Path, data: object) -> list[str]:
    """Write the files a worker model returned; a path outside the worktree is refused."""
    if not isinstance(data, dict) or not isinstance(data.get("files", []), list):
        return []
    root = workdir.resolve()
    written = []
    for entry in data.get("files", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            continue
        target = (root / entry["path"]).resolve()
        if root not in target.parents or ".git" in target.relative_to(root).parts:
            raise AgentError(f"the model asked to write {entry['path']!r}, outside the worktree")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(str(entry.get("content", "")), encoding="utf-8")
        written.append(entry["path"])
    return written


def parse_json_answer(text: str) -> Any | None:
    """The model's answer as JSON (also inside a ```json fence), or None."""
    stripped = text.strip()
    fenced = re.search(r"```(?:json)?\s*(\{.*\})\s*```", stripped, re.DOTALL)
    for candidate in (stripped, fenced.group(1) if fenced else None):
        if candidate:
            try:
                return json.loads(candidate)
            except ValueError:
                continue
    return None


@dataclass
class ModelAnswer:
    """What one model call returned."""

    text: str
    usage: dict = field(default_factory=dict)


@dataclass
class HttpAgent:
    """An agent that is a model behind HTTP; subclasses speak one protocol in ``ask``."""

    name: str
    base_url: str
    model: str
    api_key_env: str = ""
    max_retries: int = 3
    options: dict = field(default_factory=dict)
    judged_by_exit_code: bool = False
    rng: random.Random = field(default_factory=random.Random)
    on_rate_limit: Callable[[float], None] | None = None  # a conductor pauses the agent's pool

    def check(self) -> None:
        if not self.base_url or not self.model:
            raise ConfigError(f"agents.{self.name}: set base_url and model")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ConfigError(f"agents.{self.name}.api_key_env: set the {self.api_key_env} environment variable")

    def api_key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    def messages(self, request: StepRequest) -> list[dict]:
        system = self.options.get("system", "You are a careful software engineer working in a git repository.")
        context = workdir_context(request.workdir)
        return [
            {"role": "system", "content": f"{system}\n\n{ROLE_INSTRUCTIONS[request.role]}"},
            {"role": "user", "content": f"{request.prompt}\n\n{context}"},
        ]

    def ask(self, client: httpx.Client, request: StepRequest, log) -> ModelAnswer:
        raise NotImplementedError

    def step(self, request: StepRequest) -> StepResult:
        try:
            return self._step(request)
        except AgentError as error:
            key = self.api_key()
            if key and key in str(error):  # a server that echoes the key must not put it in our logs
                error.args = (str(error).replace(key, "***"),)
            raise

    def _step(self, request: StepRequest) -> StepResult:
        started = time.monotonic()
        deadlines = Deadlines.of(request, started)
        request.log_file.parent.mkdir(parents=True, exist_ok=True)
        with request.log_file.open("w", encoding="utf-8") as log:

            def one_try() -> ModelAnswer:
                log.seek(0)
                log.truncate()
                return call_abortable(request, deadlines.step, lambda client, _: self.ask(client, request, log))

            answer = with_retries(request, deadlines, self.max_retries, one_try, self.rng, self.on_rate_limit)
        data = parse_json_answer(answer.text)
        verdict = None
        if request.role == "supervisor":
            verdict = data if isinstance(data, dict) else {"verdict": "unreadable"}
        else:
            apply_edits(request.workdir, data)
        digest = hashlib.sha256(request.log_file.read_bytes()).hexdigest()
        usage = self.priced(answer.usage)
        summary = data.get("summary", answer.text) if isinstance(data, dict) else answer.text
        return StepResult(str(summary), 0, time.monotonic() - started, usage, verdict, digest,
                          request.log_file.stat().st_size)  # fmt: skip

    def priced(self, usage: dict) -> dict:
        """Usage with ``cost_usd`` when orch.yaml gives prices per million tokens."""
        per_in, per_out = self.options.get("input_cost_per_mtok"), self.options.get("output_cost_per_mtok")
        if per_in is None and per_out is None:
            return usage
        cost = usage.get("input_tokens", 0) * (per_in or 0) + usage.get("output_tokens", 0) * (per_out or 0)
        return {**usage, "cost_usd": round(cost / 1_000_000, 6)}


def http_agent(spec: AgentConfig) -> HttpAgent:
    """The HTTP agent for an ``ollama`` or ``openai`` entry."""
    if spec.kind == "ollama":
        from orchestrator.agents.ollama import OllamaAgent

        return OllamaAgent(spec.name, spec.base_url or "http://127.0.0.1:11434", spec.model, spec.api_key_env,
                           spec.max_retries, dict(spec.options))  # fmt: skip
    from orchestrator.agents.openai_compat import OpenAICompatAgent

    return OpenAICompatAgent(spec.name, spec.base_url, spec.model, spec.api_key_env, spec.max_retries,
                             dict(spec.options))  # fmt: skip
