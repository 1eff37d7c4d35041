"""HTTP model agents against a real HTTP server on 127.0.0.1: Ollama ``/api/chat`` and OpenAI chat completions.

The server plays queued answers in order and records each request with the
time it arrived (its own clock), so waits are checked from the server's side.
A "hung" answer never responds and notes when the client closes the
connection. Every wait in this file is bounded.
"""

from __future__ import annotations

import json
import os
import random
import select
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# Collected in any Python; run where orch's dependencies are (./run-tests sets up .venv with them).
httpx = pytest.importorskip("httpx", reason="httpx is not installed in this Python: run ./run-tests")

from orchestrator import manifest as states
from orchestrator.agents import StepRequest, get_agent
from orchestrator.agents.http import HttpAgent, parse_wait
from orchestrator.config import parse_config
from orchestrator.errors import AgentCancelledError, AgentError, AgentTimeoutError, ConfigError
from orchestrator.model import Status
from orchestrator.verdict import INTERVENTION, SUCCESS, VERDICTS, read_verdict
from tests.conftest import run_orch
from tests.runs import config, git, make_repo, row, runner

BOUND = 10.0  # the longest any single wait here may take
KEY_ENV = "MODEL_API_KEY_FOR_TESTS"
KEY = "sk-test-7f3a9c-DO-NOT-LOG"

# --- the server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the server received it; ``at`` is the server's monotonic clock."""

    at: float
    path: str
    headers: dict
    body: dict


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True
    model_server: ModelServer

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        server = self.model_server
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        headers = {name.lower(): value for name, value in self.headers.items()}
        server.record(Seen(time.monotonic(), self.path, headers, body))
        answer = server.next_answer()
        if "status" in answer:
            self._respond(answer)
        if answer.get("hang"):
            self._wait_for_close()

    def _respond(self, answer: dict) -> None:
        self.send_response(answer["status"])
        for name, value in answer.get("headers", {}).items():
            self.send_header(name, value)
        if "lines" in answer:  # NDJSON, one flushed line at a time; HTTP/1.0, so the body ends at close
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            for line in answer["lines"]:
                self.wfile.write((line if isinstance(line, str) else json.dumps(line)).encode() + b"\n")
                self.wfile.flush()
            return
        data = json.dumps(answer["json"]).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _wait_for_close(self) -> None:
        """Answer nothing more; note when the client closes or shuts down the connection."""
        server = self.model_server
        end = time.monotonic() + BOUND
        while time.monotonic() < end and not server.release.is_set():
            ready, _, _ = select.select([self.connection], [], [], 0.02)
            if ready:
                try:
                    data = self.connection.recv(1024)
                except OSError:
                    data = b""
                if not data:
                    server.closed.set()
                    return


class ModelServer:
    """A real HTTP server on 127.0.0.1, port 0: plays queued answers, records every request."""

    def __init__(self) -> None:
        self.answers: list[dict] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.received = threading.Event()
        self.closed = threading.Event()
        self.release = threading.Event()
        handler = type("Handler", (_Handler,), {"model_server": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def play(self, *answers: dict) -> None:
        with self.lock:
            self.answers.extend(answers)

    def next_answer(self) -> dict:
        with self.lock:
            if self.answers:
                return self.answers.pop(0)
        return {"status": 599, "json": {"error": "the test queued no answer for this request"}}

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.seen.append(seen)
        self.received.set()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(BOUND)


@pytest.fixture
def server():
    model_server = ModelServer()
    yield model_server
    model_server.close()


# --- what the servers answer -------------------------------------------------------------------


def ollama_stream(text: str, prompt_tokens: int = 50, output_tokens: int = 20) -> dict:
    """A 200 ``/api/chat`` stream: the text in small chunks, then the ``done`` line with counts."""
    chunks = [text[i : i + 7] for i in range(0, len(text), 7)]
    lines = [{"model": "test-model", "created_at": "2026-11-25T10:00:00Z",
              "message": {"role": "assistant", "content": chunk}, "done": False} for chunk in chunks]  # fmt: skip
    done = {"model": "test-model", "created_at": "2026-11-25T10:00:01Z",
            "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
            "total_duration": 5_000_000, "load_duration": 1_000,
            "prompt_eval_count": prompt_tokens, "eval_count": output_tokens}  # fmt: skip
    return {"status": 200, "lines": [*lines, done]}


def openai_answer(text: str, prompt_tokens: int = 1000, completion_tokens: int = 200) -> dict:
    """A 200 chat completion."""
    return {"status": 200, "json": {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1764064800, "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }}  # fmt: skip


def openai_error(status: int, kind: str, message: str, code: str | None = None, headers: dict | None = None) -> dict:
    """An OpenAI-style error answer: ``{"error": {"type", "code", "message"}}``."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"status": status, "json": body, "headers": headers or {}}


EDITS = json.dumps({"summary": "wrote hello.txt", "files": [{"path": "docs/hello.txt", "content": "hello\n"}]})
PASS = json.dumps({"verdict": "SUCCESS", "reason": "hello.txt is there", "feedback": ""})

# --- helpers ---------------------------------------------------------------------------------------


def base_url(kind: str, server: ModelServer) -> str:
    return server.url + ("/v1" if kind == "openai" else "")


def model_agent(kind: str, server: ModelServer, **keys) -> HttpAgent:
    """An agent built the way orch.yaml builds it, with a seeded backoff."""
    spec = parse_config({"agents": {"m": {"kind": kind, "base_url": base_url(kind, server), "model": "test-model",
                                          **keys}}}).agents["m"]  # fmt: skip
    agent = get_agent(spec)
    agent.check()
    agent.rng = random.Random(7)
    return agent


def step_request(tmp_path: Path, role: str = "worker", timeout: float = BOUND, **fields) -> StepRequest:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return StepRequest("A-1", 1, 1, role, "Write docs/hello.txt saying hello.", work, timeout,
                       tmp_path / "prompt.md", tmp_path / "logs" / f"{role}.log", tmp_path / "verdict.json",
                       **fields)  # fmt: skip


def model(kind: str, server: ModelServer, **keys) -> dict:
    """An ``agents.<name>`` entry for orch.yaml."""
    return {"kind": kind, "base_url": base_url(kind, server), "model": "test-model", **keys}


def run_item(repo: Path, worker: dict, supervisor: dict, **settings):
    """Run one item A-1 through a Runner to its end; returns (runner, outcome, reports)."""
    settings.setdefault("retry", {"max_attempts": 1})
    make_repo(repo, [row("A-1", "write docs/hello.txt")], config(worker, supervisor, **settings))
    reports: list[str] = []
    run = runner(repo, report=reports.append)
    [outcome] = run.run()
    return run, outcome, reports


def manifest(repo: Path) -> dict:
    return json.loads((repo / ".orch/runs/A-1/1/job_manifest.json").read_text())


def cancel_when_received(server: ModelServer, cancel: threading.Event, moments: dict) -> threading.Thread:
    """Set ``cancel`` from another thread once the server holds the request."""

    def act() -> None:
        if server.received.wait(BOUND):
            time.sleep(0.1)  # let the client settle into waiting for the answer
            moments["cancelled"] = time.monotonic()
            cancel.set()

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


# --- successful runs ----------------------------------------------------------------------------


def test_ollama_worker_edits_and_supervisor_verdict_run_an_item_to_done(tmp_path, server):
    server.play(ollama_stream(EDITS, 50, 20), ollama_stream(PASS, 70, 15))
    worker = model("ollama", server, temperature=0.2, system="You write tidy files.")
    run, outcome, _ = run_item(tmp_path / "repo", worker, model("ollama", server))
    assert outcome.state == states.SUCCESS
    assert run.store.get("A-1").status is Status.DONE
    assert git(tmp_path / "repo", "show", "orch/A-1/1:docs/hello.txt") == "hello\n"
    work, judge = server.seen
    assert (work.path, judge.path) == ("/api/chat", "/api/chat")
    assert work.body["model"] == "test-model" and work.body["stream"] is True
    assert work.body["options"] == {"temperature": 0.2} and "options" not in judge.body
    assert "files" in work.body["format"]["properties"] and "verdict" in judge.body["format"]["properties"]
    assert work.body["messages"][0]["content"].startswith("You write tidy files.")
    assert "# Task A-1: write docs/hello.txt" in work.body["messages"][1]["content"]
    assert "QUEUE.md" in work.body["messages"][1]["content"]  # the worktree's files, for a model that cannot look
    [step] = manifest(tmp_path / "repo")["steps"]
    assert step["worker"]["usage"] == {"input_tokens": 50, "output_tokens": 20, "total_tokens": 70}
    assert step["verdict"] == {"verdict": "SUCCESS", "reason": "hello.txt is there", "feedback": "",
                               "source": "structured output"}  # fmt: skip
    assert manifest(tmp_path / "repo")["usage"] == {"input_tokens": 120, "output_tokens": 35, "total_tokens": 155}
    transcript = (tmp_path / "repo/.orch/runs/A-1/1/step-01/worker.log").read_text()
    assert transcript == EDITS


def test_openai_run_sends_the_key_and_options_and_records_usage_and_cost(tmp_path, server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.play(openai_answer(EDITS, 1000, 200), openai_answer(f"```json\n{PASS}\n```", 3000, 100))
    prices = {"input_cost_per_mtok": 2.5, "output_cost_per_mtok": 10}
    worker = model("openai", server, api_key_env=KEY_ENV, max_tokens=900, options=prices)
    supervisor = model("openai", server, api_key_env=KEY_ENV, options={**prices, "response_format": "json_object"})
    run, outcome, reports = run_item(tmp_path / "repo", worker, supervisor)
    assert outcome.state == states.SUCCESS
    work, judge = server.seen
    assert work.path == judge.path == "/v1/chat/completions"
    assert work.headers["authorization"] == judge.headers["authorization"] == f"Bearer {KEY}"
    assert work.body["max_tokens"] == 900 and "max_tokens" not in judge.body
    assert work.body["response_format"]["type"] == "json_schema"
    assert work.body["response_format"]["json_schema"]["schema"]["required"] == ["summary", "files"]
    assert judge.body["response_format"] == {"type": "json_object"}
    data = manifest(tmp_path / "repo")
    assert data["steps"][0]["worker"]["usage"] == {"input_tokens": 1000, "output_tokens": 200, "total_tokens": 1200,
                                                   "cost_usd": 0.0045}  # fmt: skip
    assert data["steps"][0]["supervisor"]["usage"]["cost_usd"] == 0.0085
    assert data["usage"] == {"input_tokens": 4000, "output_tokens": 300, "total_tokens": 4300, "cost_usd": 0.013}
    assert_key_nowhere(tmp_path / "repo", reports)


# --- failures inside a stream, retries, rate limits -------------------------------------------------


def test_an_error_line_inside_a_200_stream_fails_the_step_without_a_retry(tmp_path, server):
    stream = ollama_stream(EDITS)
    stream["lines"] = [stream["lines"][0], {"error": "llama runner process has terminated: exit status 2"}]
    server.play(stream, ollama_stream(EDITS))
    with pytest.raises(AgentError, match="ollama stream error: llama runner process has terminated"):
        model_agent("ollama", server).step(step_request(tmp_path))
    assert len(server.seen) == 1
    assert not (tmp_path / "work/docs/hello.txt").exists()


def test_a_stream_cut_before_done_is_retried(tmp_path, server):
    cut = ollama_stream(EDITS)
    cut["lines"] = cut["lines"][:2]
    server.play(cut, ollama_stream(EDITS))
    result = model_agent("ollama", server).step(step_request(tmp_path))
    assert len(server.seen) == 2
    assert result.usage["total_tokens"] == 70 and (tmp_path / "work/docs/hello.txt").read_text() == "hello\n"
    assert (tmp_path / "logs/worker.log").read_text() == EDITS  # the log holds the try that counted


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_a_500_is_retried_then_the_answer_is_used(tmp_path, server, kind):
    answer = openai_answer(EDITS) if kind == "openai" else ollama_stream(EDITS)
    server.play(openai_error(500, "server_error", "The server had an error"), answer)
    result = model_agent(kind, server, max_retries=1).step(step_request(tmp_path))
    assert len(server.seen) == 2 and result.output == "wrote hello.txt"
    assert (tmp_path / "work/docs/hello.txt").read_text() == "hello\n"


def test_5xx_tries_count_against_max_retries(tmp_path, server):
    error = openai_error(503, "server_error", "overloaded")
    server.play(error, error, openai_answer(EDITS))
    with pytest.raises(AgentError, match=r"gave up after 2 tries: HTTP 503: overloaded"):
        model_agent("openai", server, max_retries=1).step(step_request(tmp_path))
    assert len(server.seen) == 2


def test_a_429_with_retry_after_is_waited_out_and_is_not_a_retry(tmp_path, server):
    limited = openai_error(429, "requests", "Rate limit reached for requests", "rate_limit_exceeded",
                           {"Retry-After": "1"})  # fmt: skip
    server.play(limited, openai_answer(EDITS))
    started = time.monotonic()
    result = model_agent("openai", server, max_retries=0).step(step_request(tmp_path))
    assert time.monotonic() - started < BOUND
    first, second = server.seen
    assert second.at - first.at >= 0.95  # the server's clock: it was asked again only after Retry-After
    assert result.output == "wrote hello.txt"


def test_insufficient_quota_is_final(tmp_path, server):
    quota = openai_error(429, "insufficient_quota", "You exceeded your current quota, please check your plan.",
                         "insufficient_quota", {"Retry-After": "30"})  # fmt: skip
    server.play(quota, openai_answer(EDITS))
    started = time.monotonic()
    with pytest.raises(AgentError, match="HTTP 429 insufficient_quota: You exceeded your current quota"):
        model_agent("openai", server).step(step_request(tmp_path))
    assert time.monotonic() - started < 5 and len(server.seen) == 1


def test_a_bad_request_is_final_and_names_the_error_code(tmp_path, server):
    server.play(openai_error(400, "invalid_request_error", "response_format is not supported", "unsupported"))
    with pytest.raises(AgentError, match="HTTP 400 unsupported: response_format is not supported"):
        model_agent("openai", server).step(step_request(tmp_path))
    assert len(server.seen) == 1


# --- timeouts and cancel -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_a_hung_server_is_cut_by_the_step_timeout_and_the_connection_closed(tmp_path, server, kind):
    server.play({"hang": True})
    started = time.monotonic()
    with pytest.raises(AgentTimeoutError) as caught:
        model_agent(kind, server).step(step_request(tmp_path, timeout=1.0))
    assert time.monotonic() - started < 1.0 + 2.0
    assert caught.value.seconds == 1.0
    assert server.closed.wait(2.0)


def test_an_ollama_stream_that_stalls_midway_is_cut_by_the_step_timeout(tmp_path, server):
    stalled = ollama_stream(EDITS)
    stalled["lines"] = stalled["lines"][:2]
    server.play({**stalled, "hang": True})
    started = time.monotonic()
    with pytest.raises(AgentTimeoutError):
        model_agent("ollama", server).step(step_request(tmp_path, timeout=1.0))
    assert time.monotonic() - started < 1.0 + 2.0
    assert server.closed.wait(2.0)


def test_a_hung_model_fails_the_item_with_a_timeout_note(tmp_path, server):
    server.play({"hang": True})
    run, outcome, _ = run_item(tmp_path / "repo", model("openai", server, timeout=0.5), model("openai", server))
    assert outcome.state == states.FAILED
    item = run.store.get("A-1")
    assert item.status is Status.FAILED and item.note_list() == ["timeout:0.5s"]
    assert server.closed.wait(2.0)


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_a_cancel_mid_request_returns_at_once_and_closes_the_connection(tmp_path, server, kind):
    server.play({"hang": True})
    cancel, moments = threading.Event(), {}
    helper = cancel_when_received(server, cancel, moments)
    with pytest.raises(AgentCancelledError):
        model_agent(kind, server).step(step_request(tmp_path, cancel=cancel))
    returned = time.monotonic()
    helper.join(BOUND)
    assert returned - moments["cancelled"] < 1.0
    assert server.closed.wait(2.0)


@pytest.mark.parametrize("backend", ["markdown", "sqlite"])
def test_orch_cancel_from_another_process_stops_a_running_http_step_and_closes_the_request(tmp_path, server, backend):
    server.play({"hang": True})
    repo = tmp_path / "repo"
    make_repo(repo, [row("A-1")], config(model("openai", server), model("openai", server)))
    run = runner(repo, backend=backend)  # lease 300 s: a heartbeat would notice only after 100 s
    outcomes: list = []
    thread = threading.Thread(target=lambda: outcomes.extend(run.run()), daemon=True)
    thread.start()
    try:
        assert server.received.wait(BOUND)
        where = ["--db", "queue.db"] if backend == "sqlite" else []
        cancelled = run_orch(*where, "cancel", "--id", "A-1", cwd=repo, timeout=30)
        assert (cancelled.returncode, cancelled.stdout, cancelled.stderr) == (0, "A-1 -> BLOCKED\n", "")
        assert server.closed.wait(2.0), "the request was not closed within 2 s of the cancel"
    finally:
        server.release.set()
        thread.join(BOUND)
    [outcome] = outcomes
    assert outcome.state == states.CANCELED
    assert run.store.get("A-1").note_list() == ["cancelled_by_operator"]
    assert manifest(repo)["state"] == "CANCELED"


def test_a_cancel_during_a_rate_limit_wait_returns_at_once(tmp_path, server):
    server.play(openai_error(429, "requests", "slow down", "rate_limit_exceeded", {"Retry-After": "30"}))
    cancel, moments = threading.Event(), {}
    helper = cancel_when_received(server, cancel, moments)
    with pytest.raises(AgentCancelledError, match="while waiting to retry"):
        model_agent("openai", server).step(step_request(tmp_path, timeout=60.0, cancel=cancel))
    returned = time.monotonic()
    helper.join(BOUND)
    assert returned - moments["cancelled"] < 1.0 and len(server.seen) == 1


def test_a_rate_limit_wait_longer_than_the_step_is_waited_out_within_the_job(tmp_path, server):
    limited = openai_error(429, "tokens", "slow down", "rate_limit_exceeded", {"Retry-After": "1"})
    server.play(limited, openai_answer(EDITS))
    result = model_agent("openai", server).step(step_request(tmp_path, timeout=0.5, job_left_s=BOUND))
    first, second = server.seen
    assert second.at - first.at >= 0.95 and result.output == "wrote hello.txt"


def test_a_rate_limit_wait_longer_than_the_job_has_left_is_a_timeout_at_once(tmp_path, server):
    server.play(openai_error(429, "tokens", "slow down", "rate_limit_exceeded", {"Retry-After": "120"}))
    started = time.monotonic()
    with pytest.raises(AgentTimeoutError, match="a rate limit asks for 120s, more than the job has left") as caught:
        model_agent("openai", server).step(step_request(tmp_path, timeout=5.0, job_left_s=10.0))
    assert time.monotonic() - started < 2.0 and caught.value.whole_job


def test_a_rate_limit_wait_longer_than_the_step_timeout_does_not_use_up_the_attempt(tmp_path, server):
    limited = openai_error(429, "tokens", "slow down", "rate_limit_exceeded", {"Retry-After": "1"})
    server.play(limited, openai_answer(EDITS), openai_answer(PASS))
    worker = model("openai", server, timeout=0.5)
    run, outcome, _ = run_item(tmp_path / "repo", worker, model("openai", server))
    assert outcome.state == states.SUCCESS and len(server.seen) == 3
    item = run.store.get("A-1")
    assert (item.status, item.attempts, item.note_list()) == (Status.DONE, 1, ["done:1"])


def test_a_rate_limit_wait_longer_than_the_job_timeout_fails_the_item_at_once(tmp_path, server):
    server.play(openai_error(429, "tokens", "slow down", "rate_limit_exceeded", {"Retry-After": "120"}))
    started = time.monotonic()
    run, outcome, _ = run_item(tmp_path / "repo", model("openai", server, timeout=0.5), model("openai", server),
                               job_timeout=5)  # fmt: skip
    assert time.monotonic() - started < 5 and outcome.state == states.FAILED
    assert run.store.get("A-1").note_list() == ["timeout:5s"]
    assert "a rate limit asks for 120s, more than the job has left (--job-timeout 5s)" in (
        manifest(tmp_path / "repo")["history"][-1]["message"])  # fmt: skip


# --- verdicts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "verdict"), [
    (PASS, SUCCESS),
    (f"Here you go:\n```json\n{PASS}\n```", SUCCESS),
    ('{"verdict": "continue", "reason": "no test", "feedback": "add one"}', "CONTINUE"),
    ("The change looks fine to me.", INTERVENTION),
    ('{"verdict": "MAYBE", "reason": "?"}', INTERVENTION),
    ('{"summary": "not a verdict", "files": []}', INTERVENTION),
])  # fmt: skip
def test_a_supervisor_answer_becomes_a_verdict_or_fails_closed(tmp_path, server, answer, verdict):
    server.play(openai_answer(answer))
    request = step_request(tmp_path, role="supervisor")
    result = model_agent("openai", server).step(request)
    found = read_verdict(result.output, result.exit_code, request.verdict_file, result.verdict,
                         judge_by_exit_code=False)  # fmt: skip
    assert found.verdict == verdict and found.source == "structured output"


def test_an_unparseable_supervisor_answer_blocks_the_item(tmp_path, server):
    server.play(ollama_stream(EDITS), ollama_stream("Looks good to me!"))
    run, outcome, _ = run_item(tmp_path / "repo", model("ollama", server), model("ollama", server))
    assert outcome.state == states.INTERVENTION_REQUIRED
    item = run.store.get("A-1")
    assert item.status is Status.BLOCKED
    assert item.note_list() == ["intervention:unreadable verdict from structured output"]


# --- worker edits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["../escape.txt", "/tmp/orch-escape.txt", ".git/config", "a/../../escape.txt"])
def test_a_model_cannot_write_outside_the_worktree(tmp_path, server, path):
    server.play(openai_answer(json.dumps({"summary": "x", "files": [{"path": path, "content": "owned"}]})))
    with pytest.raises(AgentError, match="outside the worktree"):
        model_agent("openai", server).step(step_request(tmp_path))
    assert not (tmp_path / "escape.txt").exists()


def test_a_worker_answer_that_is_not_json_writes_nothing_and_is_its_output(tmp_path, server):
    server.play(openai_answer("I would change hello.txt, but I cannot."))
    result = model_agent("openai", server).step(step_request(tmp_path))
    assert result.output == "I would change hello.txt, but I cannot." and result.verdict is None
    assert list((tmp_path / "work").iterdir()) == []


# --- the API key ---------------------------------------------------------------------------------------


def assert_key_nowhere(repo: Path, reports: list[str]) -> None:
    """The key is in no file under the repo (logs, manifest, queue, evidence), no commit, no report."""
    for path in repo.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in git(repo, "log", "-p", "--all")
    assert KEY not in "\n".join(reports)


def test_an_echoed_api_key_never_reaches_the_log_manifest_or_notes(tmp_path, server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.play(openai_error(401, "invalid_request_error", f"Incorrect API key provided: {KEY}.", "invalid_api_key"))
    worker = model("openai", server, api_key_env=KEY_ENV)
    run, outcome, reports = run_item(tmp_path / "repo", worker, model("openai", server, api_key_env=KEY_ENV))
    assert server.seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert outcome.state == states.FAILED
    [note] = run.store.get("A-1").note_list()
    assert note == "error:HTTP 401 invalid_api_key: Incorrect API key provided: ***."
    assert_key_nowhere(tmp_path / "repo", reports)


@pytest.mark.parametrize("answer", [
    openai_error(500, "server_error", f"upstream said: bad key {KEY}"),
    {"status": 200, "json": {"unexpected": f"not a chat completion; key was {KEY}"}},
])  # fmt: skip
def test_an_echoed_api_key_is_redacted_from_every_error(tmp_path, server, monkeypatch, answer):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.play(answer)
    with pytest.raises(AgentError) as caught:
        model_agent("openai", server, api_key_env=KEY_ENV, max_retries=0).step(step_request(tmp_path))
    assert "***" in str(caught.value) and KEY not in str(caught.value)
    assert KEY not in (tmp_path / "logs/worker.log").read_text()


def test_ollama_sends_its_api_key_as_a_bearer_header(tmp_path, server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.play(ollama_stream(EDITS))
    model_agent("ollama", server, api_key_env=KEY_ENV).step(step_request(tmp_path))
    assert server.seen[0].headers.get("authorization") == f"Bearer {KEY}"


def test_ollama_passes_max_tokens_as_num_predict(tmp_path, server):
    server.play(ollama_stream(EDITS))
    model_agent("ollama", server, max_tokens=256).step(step_request(tmp_path))
    assert server.seen[0].body.get("options", {}).get("num_predict") == 256


def test_a_missing_api_key_variable_is_a_config_error_before_any_claim(tmp_path, server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    make_repo(tmp_path / "repo", [row("A-1")], config(model("openai", server, api_key_env=KEY_ENV)))
    with pytest.raises(ConfigError, match=f"agents.w.api_key_env: set the {KEY_ENV} environment variable"):
        runner(tmp_path / "repo")
    assert "| A-1 | PENDING |" in (tmp_path / "repo/QUEUE.md").read_text()
    assert server.seen == []


# --- rate-limit headers, as a pure function ----------------------------------------------------------------


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after": "Wed, 25 Nov 2026 10:00:30 GMT"}, 30.0),
    ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
    ({"x-ratelimit-reset-tokens": "20ms"}, 0.02),
    ({"ratelimit-reset": "12"}, 12.0),
    ({}, 1.0),
])  # fmt: skip
def test_parse_wait_reads_retry_after_and_rate_limit_reset_headers(headers, seconds):
    now = 1795600800.0  # 2026-11-25T10:00:00Z
    assert parse_wait(httpx.Headers(headers), now=now) == pytest.approx(seconds)


def test_parse_wait_falls_back_when_retry_after_is_malformed():
    assert parse_wait(httpx.Headers({"retry-after": "soon", "x-ratelimit-reset-requests": "20ms"})) == 0.02


def test_a_429_with_a_malformed_retry_after_is_still_waited_out(tmp_path, server):
    limited = openai_error(429, "requests", "slow down", "rate_limit_exceeded",
                           {"Retry-After": "soon", "x-ratelimit-reset-requests": "20ms"})  # fmt: skip
    server.play(limited, openai_answer(EDITS))
    result = model_agent("openai", server, max_retries=0).step(step_request(tmp_path))
    assert result.output == "wrote hello.txt" and len(server.seen) == 2


# --- opt-in: a real OpenAI-compatible server ------------------------------------------------------------------

REAL_URL = os.environ.get("ORCH_TEST_OPENAI_URL", "")  # read at import: conftest clears ORCH_* for each test
REAL_MODEL = os.environ.get("ORCH_TEST_OPENAI_MODEL", "")
REAL_KEY_ENV = os.environ.get("ORCH_TEST_OPENAI_KEY_ENV", "")
REAL_KEY = os.environ.get(REAL_KEY_ENV, "") if REAL_KEY_ENV else ""
REAL_FORMAT = os.environ.get("ORCH_TEST_OPENAI_RESPONSE_FORMAT", "json_schema")


@pytest.mark.skipif(
    not (REAL_URL and REAL_MODEL),
    reason="set ORCH_TEST_OPENAI_URL and ORCH_TEST_OPENAI_MODEL (and ORCH_TEST_OPENAI_KEY_ENV) to use a real server",
)
def test_a_real_openai_compatible_server_takes_an_item_to_a_valid_end(tmp_path, monkeypatch):
    """Mechanics only, not content: a valid end state, usage recorded, a verdict or a closed fail, timeouts."""
    keys: dict = {"api_key_env": REAL_KEY_ENV} if REAL_KEY_ENV else {}
    if REAL_KEY_ENV:
        monkeypatch.setenv(REAL_KEY_ENV, REAL_KEY)
    agent = {"kind": "openai", "base_url": REAL_URL, "model": REAL_MODEL, "timeout": 300, "max_tokens": 1000,
             "temperature": 0, "options": {"response_format": REAL_FORMAT}, **keys}  # fmt: skip
    repo = tmp_path / "repo"
    make_repo(repo, [row("A-1", "create hello.txt containing the word hello")],
              config(agent, agent, max_steps=1, retry={"max_attempts": 1}))  # fmt: skip
    run = runner(repo)
    [outcome] = run.run()
    expected = {states.SUCCESS: Status.DONE, states.INTERVENTION_REQUIRED: Status.BLOCKED, states.FAILED: Status.FAILED}
    assert run.store.get("A-1").status is expected[outcome.state]
    data = manifest(repo)
    assert data["state"] == outcome.state and len(data["steps"]) == 1
    step = data["steps"][0]
    if "supervisor" in step:
        assert step["verdict"]["verdict"] in VERDICTS
        assert step["worker"]["usage"].keys() >= {"input_tokens", "output_tokens", "total_tokens"}
        assert data["usage"]["input_tokens"] == step["worker"]["usage"]["input_tokens"] + step["supervisor"][
            "usage"]["input_tokens"]  # fmt: skip
    if REAL_KEY:
        for path in repo.rglob("*"):
            assert not path.is_file() or REAL_KEY.encode() not in path.read_bytes(), path
    quick = get_agent(parse_config({"agents": {"q": {**agent, "timeout": 0.01}}}).agents["q"])
    started = time.monotonic()
    with pytest.raises(AgentTimeoutError):
        quick.step(step_request(tmp_path, timeout=0.01))
    assert time.monotonic() - started < 3.0
