"""Coding-agent CLI presets: their parsers on each vendor's real output, and whole runs with fake CLIs.

The fake CLIs are small Python scripts first on PATH (or named by
``agents.<name>.argv``). Each records how it was called (argv, stdin, the
``ORCH_*`` environment) and prints what the real CLI prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator import manifest as states
from orchestrator.agents import StepRequest, get_agent
from orchestrator.agents.limits import DEFAULT_WAIT, limit_wait
from orchestrator.agents.presets import PRESETS, parse_aider, parse_claude, parse_cline, parse_codex, parse_gemini
from orchestrator.config import AGENT_KINDS, parse_config
from orchestrator.errors import AgentCancelledError, AgentTimeoutError, ConfigError
from orchestrator.model import Status
from tests.runs import config, git, make_repo, row, runner

# --- what the real CLIs print ----------------------------------------------------------

CLAUDE_USAGE = {
    "input_tokens": 12, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 4000, "output_tokens": 90,
    "server_tool_use": {"web_search_requests": 0}, "service_tier": "standard",
}  # fmt: skip


def claude_result(**fields) -> str:
    """One ``claude -p --output-format json`` result object."""
    result = {
        "type": "result", "subtype": "success", "is_error": False, "duration_ms": 5120, "duration_api_ms": 4800,
        "num_turns": 4, "result": "Wrote out.txt.", "session_id": "0f6c-4a", "total_cost_usd": 0.0123,
        "usage": CLAUDE_USAGE, "permission_denials": [],
    }  # fmt: skip
    return json.dumps({**result, **fields})


CLAUDE_DENIED = claude_result(
    result="I need permission to run the tests.",
    permission_denials=[
        {"tool_name": "Bash", "tool_use_id": "toolu_01", "tool_input": {"command": "pytest -q"}},
        {"tool_name": "Bash", "tool_use_id": "toolu_02", "tool_input": {"command": "make"}},
    ],
)
CLAUDE_MAX_TURNS = json.dumps({
    "type": "result", "subtype": "error_max_turns", "is_error": True, "duration_ms": 90000, "num_turns": 12,
    "session_id": "0f6c-4b", "total_cost_usd": 0.2, "usage": {"input_tokens": 800, "output_tokens": 2000},
})  # fmt: skip
CLAUDE_API_ERROR = claude_result(is_error=True, result="API Error: 401 invalid x-api-key", total_cost_usd=0,
                                 num_turns=1, usage={"input_tokens": 0, "output_tokens": 0})  # fmt: skip


def codex_events(*tail: dict) -> str:
    """``codex exec --json``: JSONL events, a thread and a turn."""
    events = [{"type": "thread.started", "thread_id": "0199a213"}, {"type": "turn.started"},
              {"type": "item.completed", "item": {"id": "item_0", "type": "reasoning", "text": "**Planning**"}},
              {"type": "item.completed", "item": {"id": "item_1", "type": "command_execution",
                                                  "command": "bash -lc ls", "aggregated_output": "README.md\n",
                                                  "exit_code": 0, "status": "completed"}},
              *tail]  # fmt: skip
    return "".join(json.dumps(event) + "\n" for event in events)


CODEX_OK = codex_events(
    {"type": "item.completed", "item": {"id": "item_2", "type": "agent_message", "text": "Created out.txt."}},
    {"type": "turn.completed", "usage": {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122}},
)
CODEX_TURN_FAILED = codex_events(
    {"type": "turn.failed", "error": {"message": "stream disconnected before completion"}},
)
CODEX_ERROR = codex_events({"type": "error", "message": "unexpected status 401 Unauthorized"})


def gemini_json(response: str | None = "Done: created out.txt.", error: dict | None = None) -> str:
    """``gemini -p ... --output-format json``: ``{response, stats, error}``."""
    stats = {
        "models": {
            "gemini-2.5-pro": {"api": {"totalRequests": 2, "totalErrors": 0, "totalLatencyMs": 5400},
                               "tokens": {"prompt": 24939, "candidates": 20, "total": 25113, "cached": 21263,
                                          "thoughts": 154, "tool": 0}},
            "gemini-2.5-flash": {"api": {"totalRequests": 1, "totalErrors": 0, "totalLatencyMs": 900},
                                 "tokens": {"prompt": 100, "candidates": 10, "total": 110, "cached": 0,
                                            "thoughts": 0, "tool": 0}},
        },
        "tools": {"totalCalls": 1, "totalSuccess": 1, "totalFail": 0},
        "files": {"totalLinesAdded": 1, "totalLinesRemoved": 0},
    }  # fmt: skip
    data: dict = {"stats": stats}
    if response is not None:
        data["response"] = response
    if error is not None:
        data["error"] = error
    return json.dumps(data, indent=2)


GEMINI_INPUT_ERROR = json.dumps({"error": {"type": "FatalInputError", "message": "Unknown argument: --bogus",
                                           "code": 42}})  # fmt: skip


def cline_lines(*messages: dict) -> str:
    """``cline --json``: one say/ask message per line, partial ones included."""
    start = [{"type": "say", "say": "task", "text": "the task", "ts": 1},
             {"type": "say", "say": "text", "text": "Let me look", "partial": True, "ts": 2},
             {"type": "say", "say": "text", "text": "Let me look at the files.", "ts": 2}]  # fmt: skip
    return "".join(json.dumps(message) + "\n" for message in [*start, *messages])


CLINE_DONE = cline_lines({"type": "say", "say": "completion_result", "text": "Created out.txt.", "ts": 3})
CLINE_FOLLOWUP = cline_lines(
    {"type": "ask", "ask": "followup", "ts": 3,
     "text": json.dumps({"question": "Which database should I use?", "options": ["sqlite", "postgres"]})},
)  # fmt: skip

# --- the parsers, as pure functions -------------------------------------------------------


def test_claude_success_records_its_usage_cost_and_turns():
    parsed = parse_claude(claude_result(), 0)
    assert (parsed.text, parsed.error, parsed.intervention) == ("Wrote out.txt.", None, None)
    assert parsed.usage == {**CLAUDE_USAGE, "total_cost_usd": 0.0123, "num_turns": 4, "duration_ms": 5120}


def test_claude_permission_denials_ask_a_human_naming_each_tool_once():
    parsed = parse_claude(
        claude_result(permission_denials=[{"tool_name": "Write"}, {"tool_name": "Bash"}, {"tool_name": "Bash"}]), 0
    )
    assert parsed.error is None
    assert parsed.intervention.startswith("permission denied for Bash, Write")
    assert "allow it in agents.<name>.argv" in parsed.intervention
    assert parsed.usage["total_cost_usd"] == 0.0123


def test_claude_turn_limit_asks_a_human():
    parsed = parse_claude(CLAUDE_MAX_TURNS, 1)
    assert parsed.intervention == "claude reached its turn limit after 12 turns"
    assert parsed.usage == {"input_tokens": 800, "output_tokens": 2000, "total_cost_usd": 0.2, "num_turns": 12,
                            "duration_ms": 90000}  # fmt: skip


def test_claude_is_error_fails_the_step_with_its_message():
    parsed = parse_claude(CLAUDE_API_ERROR, 1)
    assert parsed.intervention is None
    assert "API Error: 401 invalid x-api-key" in parsed.error


def test_claude_is_error_is_not_called_a_success():
    assert "success" not in parse_claude(CLAUDE_API_ERROR, 1).error


@pytest.mark.parametrize("stdout", ["", "Error: not logged in\n", "[1, 2]"])
def test_claude_without_a_json_result_fails(stdout):
    assert parse_claude(stdout, 1).error == "no JSON result from claude (exit 1)"


def test_claude_result_is_found_after_other_lines():
    parsed = parse_claude("warning: update available\n" + claude_result() + "\n", 0)
    assert parsed.text == "Wrote out.txt." and parsed.error is None


def test_codex_success_keeps_the_agent_message_and_turn_usage():
    parsed = parse_codex(CODEX_OK, 0)
    assert (parsed.text, parsed.error, parsed.intervention) == ("Created out.txt.", None, None)
    assert parsed.usage == {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122}


def test_codex_usage_is_summed_over_turns_and_noise_is_skipped():
    turn = {"type": "turn.completed", "usage": {"input_tokens": 10, "output_tokens": 1}}
    stdout = "Reading prompt from stdin...\n{not json\n" + codex_events(turn, turn)
    assert parse_codex(stdout, 0).usage == {"input_tokens": 20, "output_tokens": 2}


@pytest.mark.parametrize(
    ("stdout", "error"),
    [
        (CODEX_TURN_FAILED, "codex turn failed: stream disconnected before completion"),
        (CODEX_ERROR, "codex error: unexpected status 401 Unauthorized"),
        (codex_events(), "codex ended without a completed turn (exit 0)"),
        ("", "no JSON events from codex (exit 0)"),
    ],
)
def test_codex_failures_fail_the_step_even_with_exit_0(stdout, error):
    assert parse_codex(stdout, 0).error == error


def test_gemini_success_sums_tokens_over_its_models():
    parsed = parse_gemini(gemini_json(), 0)
    assert (parsed.text, parsed.error, parsed.intervention) == ("Done: created out.txt.", None, None)
    assert parsed.usage == {"input_tokens": 25039, "output_tokens": 30, "total_tokens": 25223}


def test_gemini_exit_42_is_an_input_error_with_its_message():
    assert parse_gemini(GEMINI_INPUT_ERROR, 42).error == "gemini failed: Unknown argument: --bogus"
    assert parse_gemini("", 42).error == "gemini failed: input error (invalid prompt or arguments)"


def test_gemini_exit_53_turn_limit_asks_a_human():
    parsed = parse_gemini(gemini_json("Partial work."), 53)
    assert parsed.error is None and parsed.intervention == "gemini exceeded its turn limit"
    assert parsed.usage["total_tokens"] == 25223


@pytest.mark.parametrize(
    ("stdout", "code", "error"),
    [
        (gemini_json(error={"type": "ApiError", "message": "API key not valid. Please pass a valid API key.",
                            "code": 400}), 1, "gemini failed: API key not valid. Please pass a valid API key."),
        ("", 1, "gemini failed: exit 1"),
        (gemini_json(response=None), 0, "no JSON response from gemini"),
    ],
)  # fmt: skip
def test_gemini_errors_fail_the_step(stdout, code, error):
    parsed = parse_gemini(stdout, code)
    assert (parsed.error, parsed.retry_after) == (error, None)


def test_cline_completion_result_is_the_answer_and_partials_are_ignored():
    parsed = parse_cline(CLINE_DONE, 0)
    assert (parsed.text, parsed.error, parsed.intervention) == ("Created out.txt.", None, None)


def test_cline_followup_question_asks_a_human():
    parsed = parse_cline(CLINE_FOLLOWUP, 0)
    assert parsed.error is None
    assert parsed.intervention.startswith("cline asks (followup): ")
    assert "Which database should I use?" in parsed.intervention
    assert parsed.text == "Let me look at the files."


@pytest.mark.parametrize(("stdout", "error"), [
    (cline_lines(), "cline ended without a completion_result"),
    ("plain text\n", "no JSON messages from cline (exit 0)"),
])  # fmt: skip
def test_cline_without_a_completion_fails(stdout, error):
    assert parse_cline(stdout, 0).error == error


def test_aider_output_is_text_only():
    parsed = parse_aider("Applied edit to out.txt\nTokens: 2.1k sent, 120 received.\n", 0)
    assert parsed == type(parsed)("Applied edit to out.txt\nTokens: 2.1k sent, 120 received.\n")


def test_every_preset_passes_the_prompt_as_documented():
    assert {kind: preset.stdin for kind, preset in PRESETS.items()} == {
        "claude": "prompt", "codex": "closed", "gemini": "closed", "cline": "closed", "aider": "closed",
    }  # fmt: skip
    for kind in ("codex", "gemini", "cline"):
        assert "{prompt}" in PRESETS[kind].argv
    assert "{prompt_file}" in PRESETS["aider"].argv and PRESETS["aider"].judge_by_diff


# --- rate and usage limits: waited out, not failed ------------------------------------------------


def claude_limit(text: str) -> str:
    """What ``claude -p --output-format json`` prints when a limit stops it before any turn."""
    return claude_result(is_error=True, result=text, total_cost_usd=0, num_turns=1, duration_ms=310,
                         usage={"input_tokens": 0, "output_tokens": 0})  # fmt: skip


RATE_LIMITED = "This request would exceed the rate limit for your organization of 40,000 input tokens per minute."
CLAUDE_429 = claude_limit(f'API Error: 429 {{"type":"error","error":{{"type":"rate_limit_error","message":'
                          f'"{RATE_LIMITED}"}}}}')  # fmt: skip
CLAUDE_OVERLOADED = claude_limit('API Error: 529 {"type":"error","error":{"type":"overloaded_error",'
                                 '"message":"Overloaded"}}')  # fmt: skip
CLAUDE_NO_CREDIT = claude_limit("Credit balance is too low")
CODEX_RATE_LIMIT = codex_events({"type": "error", "message": (
    "Rate limit reached for organization org-a1 on tokens per min (TPM): Limit 30000, Used 29512, Requested 1803. "
    "Please try again in 2.63s. Visit https://platform.openai.com/account/rate-limits to learn more.")})  # fmt: skip
CODEX_RETRIES_SPENT = codex_events({"type": "turn.failed", "error": {
    "message": "exceeded retry limit, last status: 429 Too Many Requests"}})  # fmt: skip
CODEX_USAGE_LIMIT = codex_events({"type": "error", "message": (
    "You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) or try again in 2 hours "
    "5 minutes.")})  # fmt: skip
CODEX_NO_QUOTA = codex_events({"type": "error", "message": "Quota exceeded. Check your plan and billing details."})
GEMINI_EXHAUSTED = gemini_json(response=None, error={"type": "ApiError", "code": 429, "message": (
    '[{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing '
    'details. Please retry in 22.5s.","status":"RESOURCE_EXHAUSTED"}}]')})  # fmt: skip
GEMINI_429 = gemini_json(error={"type": "ApiError", "message": "quota exceeded", "code": 429})


def test_a_claude_usage_limit_waits_until_its_reset_time():
    reset = int(time.time()) + 3600
    parsed = parse_claude(claude_limit(f"Claude AI usage limit reached|{reset}"), 1)
    assert parsed.retry_after == pytest.approx(3600, abs=5)
    assert parsed.error.startswith("claude reported an error: Claude AI usage limit reached")


@pytest.mark.parametrize(
    ("parse", "stdout", "wait"),
    [
        (parse_claude, CLAUDE_429, DEFAULT_WAIT),
        (parse_claude, CLAUDE_OVERLOADED, DEFAULT_WAIT),
        (parse_codex, CODEX_RATE_LIMIT, 2.63),
        (parse_codex, CODEX_RETRIES_SPENT, DEFAULT_WAIT),
        (parse_codex, CODEX_USAGE_LIMIT, 2 * 3600 + 5 * 60),
        (parse_gemini, GEMINI_EXHAUSTED, 22.5),
        (parse_gemini, GEMINI_429, DEFAULT_WAIT),
    ],
    ids=["claude-429", "claude-overloaded", "codex-try-again-in", "codex-429", "codex-usage", "gemini-exhausted",
         "gemini-429"],
)  # fmt: skip
def test_a_reported_limit_asks_for_the_wait_it_names_or_the_default(parse, stdout, wait):
    parsed = parse(stdout, 1)
    assert parsed.retry_after == pytest.approx(wait) and parsed.error


@pytest.mark.parametrize(
    ("parse", "stdout"),
    [(parse_claude, CLAUDE_NO_CREDIT), (parse_claude, CLAUDE_API_ERROR), (parse_codex, CODEX_NO_QUOTA),
     (parse_codex, CODEX_ERROR), (parse_gemini, GEMINI_INPUT_ERROR)],
    ids=["claude-credit", "claude-401", "codex-quota", "codex-401", "gemini-input"],
)  # fmt: skip
def test_used_up_quota_and_other_errors_stay_final(parse, stdout):
    parsed = parse(stdout, 1)
    assert parsed.retry_after is None and parsed.error


@given(st.decimals(min_value=0, max_value=100_000, places=3), st.sampled_from(["try again in", "retry after"]))
def test_a_limit_that_names_a_wait_in_seconds_gets_exactly_that_wait(seconds, phrase):
    assert limit_wait(f"Rate limit reached. Please {phrase} {seconds}s.") == pytest.approx(float(seconds))


def test_a_reset_time_already_past_means_no_wait():
    assert limit_wait("Claude AI usage limit reached|1700000000", now=1700000100.0) == 0.0


# --- fake CLIs ------------------------------------------------------------------------------

FAKE = """\
#!{python}
import json, os, sys, time
rules = json.loads({rules!r})
call = {{"argv": sys.argv[1:], "stdin": sys.stdin.read(), "cwd": os.getcwd(), "at": time.time(),
        "env": {{k: v for k, v in os.environ.items() if k.startswith("ORCH_")}}}}
with open({calls!r}, "a") as stream:
    stream.write(json.dumps(call) + "\\n")
with open({calls!r}) as stream:
    number = sum(1 for _ in stream)
facts = {{"role": os.environ.get("ORCH_ROLE"), "attempt": os.environ.get("ORCH_ATTEMPT"),
         "step": os.environ.get("ORCH_STEP"), "call": str(number)}}
rule = next(r for r in rules if all(facts[k] == str(v) for k, v in r.get("when", {{}}).items()))
for name, text in rule.get("write", {{}}).items():
    with open(name, "w") as stream:
        stream.write(text)
sys.stdout.write(rule.get("stdout", ""))
sys.exit(rule.get("exit", 0))
"""


def fake_cli(folder: Path, name: str, *rules: dict) -> Path:
    """An executable ``name`` playing the first rule whose ``when`` matches ORCH_ROLE/ATTEMPT/STEP or its call."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    calls = folder / f"{name}.calls.jsonl"
    path.write_text(FAKE.format(python=sys.executable, rules=json.dumps(rules), calls=str(calls)))
    path.chmod(0o755)
    return path


def calls(program: Path) -> list[dict]:
    log = program.with_name(program.name + ".calls.jsonl")
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def bin_dir(tmp_path, monkeypatch) -> Path:
    """A folder first on PATH for the fake CLIs."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def manifest(repo: Path, item_id: str = "A-1", attempt: int = 1) -> dict:
    return json.loads((repo / f".orch/runs/{item_id}/{attempt}/job_manifest.json").read_text())


def prompt_of(repo: Path, role: str = "worker", step: int = 1, attempt: int = 1) -> str:
    return (repo / f".orch/runs/A-1/{attempt}/step-{step:02d}/{role}.prompt.md").read_text()


def run_one(repo: Path, worker: dict, supervisor: dict | None = None, **settings):
    """Make the repo with one item A-1, run it to the end; returns (runner, outcomes)."""
    make_repo(repo, [row("A-1", "write out.txt")], config(worker, supervisor, **settings))
    run = runner(repo)
    return run, run.run()


# --- whole runs: claude ---------------------------------------------------------------------

CONTINUE_THEN_SUCCESS = {"kind": "scripted", "steps": [
    {"verdict": {"verdict": "CONTINUE", "reason": "not yet", "feedback": "add a newline"}},
    {"verdict": {"verdict": "SUCCESS", "reason": "good"}},
]}  # fmt: skip


def test_claude_worker_gets_the_prompt_on_stdin_and_its_usage_is_summed_per_attempt(tmp_path, bin_dir):
    claude = fake_cli(bin_dir, "claude", {"write": {"out.txt": "hi\n"}, "stdout": claude_result()})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "claude"}, CONTINUE_THEN_SUCCESS)
    repo = tmp_path / "repo"
    assert (outcome.state, outcome.steps) == (states.SUCCESS, 2)
    assert run.store.get("A-1").status is Status.DONE
    first, second = calls(claude)
    assert first["argv"] == list(PRESETS["claude"].argv[1:])
    assert first["stdin"] == prompt_of(repo) and "# Task A-1: write out.txt" in first["stdin"]
    assert "add a newline" in second["stdin"]
    assert first["env"]["ORCH_ROLE"] == "worker" and Path(first["cwd"]) == repo / ".orch/worktrees/A-1/1"
    data = manifest(repo)
    step_usage = data["steps"][0]["worker"]["usage"]
    assert step_usage == {**CLAUDE_USAGE, "total_cost_usd": 0.0123, "num_turns": 4, "duration_ms": 5120}
    assert data["usage"] == {"input_tokens": 24, "cache_creation_input_tokens": 600,
                             "cache_read_input_tokens": 8000, "output_tokens": 180, "total_cost_usd": 0.0246,
                             "num_turns": 8, "duration_ms": 10240}  # fmt: skip
    assert git(repo, "show", "orch/A-1/1:out.txt") == "hi\n"


def test_claude_permission_denial_blocks_the_item_without_asking_the_supervisor(tmp_path, bin_dir):
    fake_cli(bin_dir, "claude", {"stdout": CLAUDE_DENIED})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "claude"})
    assert outcome.state == states.INTERVENTION_REQUIRED
    item = run.store.get("A-1")
    assert item.status is Status.BLOCKED
    assert item.notes.startswith("intervention:permission denied for Bash")
    assert "allow it in agents.<name>.argv" in item.notes
    [step] = manifest(tmp_path / "repo")["steps"]
    assert "supervisor" not in step and step["verdict"]["source"] == "worker"
    assert step["worker"]["intervention"].startswith("permission denied for Bash")
    assert step["worker"]["usage"]["total_cost_usd"] == 0.0123


def test_claude_permission_denial_is_one_note(tmp_path, bin_dir):
    fake_cli(bin_dir, "claude", {"stdout": CLAUDE_DENIED})
    run, _ = run_one(tmp_path / "repo", {"kind": "claude"})
    [note] = run.store.get("A-1").note_list()
    assert note.startswith("intervention:permission denied for Bash")


def test_claude_turn_limit_blocks_the_item_even_though_it_exits_1(tmp_path, bin_dir):
    fake_cli(bin_dir, "claude", {"stdout": CLAUDE_MAX_TURNS, "exit": 1})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "claude"})
    assert outcome.state == states.INTERVENTION_REQUIRED
    assert run.store.get("A-1").note_list() == ["intervention:claude reached its turn limit after 12 turns"]


def test_claude_is_error_fails_the_item(tmp_path, bin_dir):
    fake_cli(bin_dir, "claude", {"stdout": CLAUDE_API_ERROR, "exit": 1})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "claude"}, retry={"max_attempts": 1})
    assert outcome.state == states.FAILED
    [note] = run.store.get("A-1").note_list()
    assert note.startswith("error:w: claude reported") and "API Error: 401 invalid x-api-key" in note


def test_claude_supervisor_verdict_is_read_from_its_result(tmp_path, bin_dir):
    worker = fake_cli(bin_dir, "fake-worker", {"write": {"out.txt": "hi\n"}, "stdout": claude_result()})
    fake_cli(bin_dir, "claude", {"stdout": claude_result(result="Looks right.\nVERDICT: SUCCESS out.txt exists")})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "claude", "argv": [str(worker), "-p"]}, {"kind": "claude"})
    assert outcome.state == states.SUCCESS
    [step] = manifest(tmp_path / "repo")["steps"]
    assert step["verdict"] == {"verdict": "SUCCESS", "reason": "out.txt exists", "feedback": "", "source": "output"}
    assert manifest(tmp_path / "repo")["usage"]["total_cost_usd"] == 0.0246  # worker and supervisor


def test_a_preset_supervisor_without_a_verdict_fails_closed_despite_exit_0(tmp_path, bin_dir):
    fake_cli(bin_dir, "claude", {"stdout": claude_result(result="I looked at it; seems fine.")})
    worker = {"kind": "command", "argv": [sys.executable, "-c", "open('out.txt', 'w').write('x')"]}
    run, [outcome] = run_one(tmp_path / "repo", worker, {"kind": "claude"})
    assert outcome.state == states.INTERVENTION_REQUIRED
    assert run.store.get("A-1").note_list() == ["intervention:the supervisor gave no verdict"]


def test_argv_overrides_the_preset_program_and_flags(tmp_path, bin_dir):
    custom = fake_cli(tmp_path / "elsewhere", "my-claude", {"stdout": claude_result()})
    argv = [str(custom), "-p", "--output-format", "json", "--allowedTools", "Bash(pytest:*)", "{id}"]
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "claude", "argv": argv})
    assert outcome.state == states.SUCCESS
    [call] = calls(custom)
    assert call["argv"] == ["-p", "--output-format", "json", "--allowedTools", "Bash(pytest:*)", "A-1"]


# --- whole runs: a limit is waited out within the job ---------------------------------------------------

BOUND = 20.0  # the most a step under test may take on a slow machine


def test_a_claude_usage_limit_is_waited_out_and_the_step_runs_again_on_the_same_attempt(tmp_path, bin_dir):
    reset = int(time.time()) + 2  # one to two seconds after the first call
    claude = fake_cli(bin_dir, "claude", {"when": {"call": 1}, "stdout": claude_limit(f"Claude AI usage limit "
                                                                                       f"reached|{reset}")},
                      {"write": {"out.txt": "hi\n"}, "stdout": claude_result()})  # fmt: skip
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "claude"}, retry={"max_attempts": 1})
    assert (outcome.attempt, outcome.state) == (1, states.SUCCESS)
    item = run.store.get("A-1")
    assert (item.status, item.attempts, item.note_list()) == (Status.DONE, 1, ["done:1"])
    first, second = calls(claude)
    assert second["at"] >= reset - 0.05 and second["stdin"] == first["stdin"]  # a fresh process after the reset
    [step] = manifest(tmp_path / "repo")["steps"]
    assert step["worker"]["usage"]["total_cost_usd"] == 0.0123  # the log and usage are the try that counted
    log = (tmp_path / "repo/.orch/runs/A-1/1/step-01/worker.log").read_text()
    assert "usage limit" not in log and json.loads(log)["result"] == "Wrote out.txt."


def test_a_claude_usage_limit_resetting_after_the_job_timeout_fails_the_item_at_once(tmp_path, bin_dir):
    reset = int(time.time()) + 3600
    claude = fake_cli(bin_dir, "claude", {"stdout": claude_limit(f"Claude AI usage limit reached|{reset}")})
    started = time.monotonic()
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "claude"}, retry={"max_attempts": 1}, job_timeout=5)
    assert time.monotonic() - started < 5 and outcome.state == states.FAILED
    assert run.store.get("A-1").note_list() == ["timeout:5s"] and len(calls(claude)) == 1
    message = manifest(tmp_path / "repo")["history"][-1]["message"]
    assert "a rate limit asks for 3" in message and "more than the job has left (--job-timeout 5s)" in message


def claude_agent(**settings):
    """The claude preset as the runner builds it (the fake ``claude`` first on PATH)."""
    agent = get_agent(parse_config(config({"kind": "claude", **settings})).agents["w"])
    agent.check()
    return agent


def claude_request(tmp_path: Path, timeout: float = BOUND, **fields) -> StepRequest:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (tmp_path / "prompt.md").write_text("write out.txt")
    return StepRequest("A-1", 1, 1, "worker", "write out.txt", work, timeout, tmp_path / "prompt.md",
                       tmp_path / "logs/worker.log", tmp_path / "verdict.json", **fields)  # fmt: skip


def test_a_cancel_during_a_limit_wait_ends_the_step_at_once(tmp_path, bin_dir):
    claude = fake_cli(bin_dir, "claude", {"stdout": CLAUDE_429})  # no reset time: the default wait
    agent, limited, cancel, moments = claude_agent(), threading.Event(), threading.Event(), {}
    agent.on_rate_limit = lambda seconds: (moments.update(wait=seconds), limited.set())

    def cancel_when_limited() -> None:
        if limited.wait(BOUND):
            moments["cancelled"] = time.monotonic()
            cancel.set()

    helper = threading.Thread(target=cancel_when_limited)
    helper.start()
    with pytest.raises(AgentCancelledError, match="while waiting to retry"):
        agent.step(claude_request(tmp_path, job_left_s=10 * DEFAULT_WAIT, cancel=cancel))
    returned = time.monotonic()
    helper.join(BOUND)
    assert moments["wait"] == DEFAULT_WAIT and returned - moments["cancelled"] < 1.0 and len(calls(claude)) == 1


def test_orch_cancel_from_another_shell_ends_a_limit_wait_at_once(tmp_path, bin_dir):
    from tests.conftest import run_orch
    from tests.runs import wait_for

    claude = fake_cli(bin_dir, "claude", {"stdout": CLAUDE_429})  # the default 60 s wait, with no process
    repo = tmp_path / "repo"
    make_repo(repo, [row("A-1", "write out.txt")], config({"kind": "claude"}))
    run, outcomes = runner(repo), []
    thread = threading.Thread(target=lambda: outcomes.extend(run.run()), daemon=True)
    thread.start()
    wait_for(lambda: calls(claude), "the first try to hit the limit")
    assert run_orch("--queue", str(repo / "QUEUE.md"), "cancel", "--id", "A-1").returncode == 0
    cancelled = time.monotonic()
    thread.join(BOUND)
    assert time.monotonic() - cancelled < 2.0, "the wait outlived the cancel"
    [outcome] = outcomes
    assert outcome.state == states.CANCELED and len(calls(claude)) == 1
    assert run.store.get("A-1").status is Status.BLOCKED


def test_without_a_job_bound_a_limit_longer_than_the_step_timeout_fails_at_once(tmp_path, bin_dir):
    fake_cli(bin_dir, "claude", {"stdout": CLAUDE_429})
    started = time.monotonic()
    with pytest.raises(AgentTimeoutError, match=f"a rate limit asks for {DEFAULT_WAIT:g}s, more than the step's 5s"):
        claude_agent().step(claude_request(tmp_path, timeout=5.0))
    assert time.monotonic() - started < 5.0


# --- whole runs: codex, gemini, cline, aider ------------------------------------------------------


def test_codex_success_records_turn_usage(tmp_path, bin_dir):
    fake_cli(bin_dir, "codex", {"write": {"out.txt": "hi\n"}, "stdout": CODEX_OK})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "codex"})
    assert outcome.state == states.SUCCESS
    data = manifest(tmp_path / "repo")
    usage = {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122}
    assert data["steps"][0]["worker"]["usage"] == usage and data["usage"] == usage


def test_codex_turn_failed_with_exit_0_fails_the_attempt_and_the_retry_runs(tmp_path, bin_dir):
    fake_cli(bin_dir, "codex", {"when": {"attempt": 1}, "stdout": CODEX_TURN_FAILED},
             {"write": {"out.txt": "hi\n"}, "stdout": CODEX_OK})  # fmt: skip
    run, outcomes = run_one(tmp_path / "repo", {"kind": "codex"},
                            retry={"max_attempts": 2, "backoff_base": 0.01})  # fmt: skip
    assert [(o.attempt, o.state) for o in outcomes] == [(1, states.FAILED), (2, states.SUCCESS)]
    assert run.store.get("A-1").note_list() == [
        "error:w: codex turn failed: stream disconnected before completion", "retry:1", "done:2",
    ]  # fmt: skip
    first = manifest(tmp_path / "repo", attempt=1)
    assert first["state"] == states.FAILED
    assert first["steps"][0]["worker"] == {
        "agent": "w",
        "exit_code": 0,
        "usage": {},  # what the failed call told
        "error": "w: codex turn failed: stream disconnected before completion",
    }
    assert "codex turn failed" in first["history"][-1]["message"]


def test_a_failed_claude_call_still_counts_its_usage_and_the_item_sums_every_attempt(tmp_path, bin_dir):
    from orchestrator.manifest import item_usage

    spent = {"input_tokens": 700, "output_tokens": 40}
    fake_cli(bin_dir, "claude", {"when": {"attempt": 1}, "stdout": claude_result(
                 is_error=True, subtype="error_during_execution", result="API Error: 500", total_cost_usd=0.05,
                 usage=spent)},
             {"write": {"out.txt": "hi\n"}, "stdout": claude_result()})  # fmt: skip
    run, outcomes = run_one(tmp_path / "repo", {"kind": "claude"}, retry={"max_attempts": 2, "backoff_base": 0.01})
    assert [(o.attempt, o.state) for o in outcomes] == [(1, states.FAILED), (2, states.SUCCESS)]
    failed = manifest(tmp_path / "repo", attempt=1)
    assert failed["usage"]["total_cost_usd"] == 0.05 and failed["steps"][0]["worker"]["usage"]["input_tokens"] == 700
    total = item_usage(tmp_path / "repo" / ".orch", "A-1")
    assert total["total_cost_usd"] == round(0.05 + 0.0123, 6) and total["input_tokens"] == 700 + 12


def test_codex_error_event_fails_the_item(tmp_path, bin_dir):
    fake_cli(bin_dir, "codex", {"stdout": CODEX_ERROR})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "codex"}, retry={"max_attempts": 1})
    assert outcome.state == states.FAILED
    item = run.store.get("A-1")
    assert item.status is Status.FAILED
    assert item.note_list() == ["error:w: codex error: unexpected status 401 Unauthorized"]


def test_gemini_success_records_token_usage(tmp_path, bin_dir):
    fake_cli(bin_dir, "gemini", {"write": {"out.txt": "hi\n"}, "stdout": gemini_json()})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "gemini"})
    assert outcome.state == states.SUCCESS
    assert manifest(tmp_path / "repo")["usage"] == {"input_tokens": 25039, "output_tokens": 30, "total_tokens": 25223}


def test_gemini_exit_42_fails_the_item(tmp_path, bin_dir):
    fake_cli(bin_dir, "gemini", {"stdout": GEMINI_INPUT_ERROR, "exit": 42})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "gemini"}, retry={"max_attempts": 1})
    assert outcome.state == states.FAILED
    assert run.store.get("A-1").note_list() == ["error:w: gemini failed: Unknown argument: --bogus"]


def test_gemini_exit_53_blocks_the_item(tmp_path, bin_dir):
    fake_cli(bin_dir, "gemini", {"stdout": gemini_json("Ran out of turns."), "exit": 53})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "gemini"})
    assert outcome.state == states.INTERVENTION_REQUIRED
    assert run.store.get("A-1").note_list() == ["intervention:gemini exceeded its turn limit"]
    assert manifest(tmp_path / "repo")["usage"]["total_tokens"] == 25223


def test_cline_completion_passes(tmp_path, bin_dir):
    fake_cli(bin_dir, "cline", {"write": {"out.txt": "hi\n"}, "stdout": CLINE_DONE})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "cline"})
    assert outcome.state == states.SUCCESS
    assert run.store.get("A-1").status is Status.DONE


def test_cline_followup_question_blocks_the_item_with_the_question(tmp_path, bin_dir):
    fake_cli(bin_dir, "cline", {"stdout": CLINE_FOLLOWUP})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "cline"})
    assert outcome.state == states.INTERVENTION_REQUIRED
    [note] = run.store.get("A-1").note_list()
    assert note.startswith("intervention:cline asks (followup): ") and "Which database" in note


def test_aider_step_without_a_diff_fails(tmp_path, bin_dir):
    fake_cli(bin_dir, "aider", {"stdout": "I could not find the file.\nTokens: 2.1k sent, 40 received.\n"})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "aider"}, retry={"max_attempts": 1})
    assert outcome.state == states.FAILED
    [note] = run.store.get("A-1").note_list()
    assert note.startswith("error:w changed no file: I could not find the file.")


def test_aider_step_with_a_diff_passes_and_reads_the_prompt_file(tmp_path, bin_dir):
    aider = fake_cli(bin_dir, "aider", {"write": {"out.txt": "hi\n"}, "stdout": "Applied edit to out.txt\n"})
    run, [outcome] = run_one(tmp_path / "repo", {"kind": "aider"})
    assert outcome.state == states.SUCCESS
    [call] = calls(aider)
    prompt_file = tmp_path / "repo/.orch/runs/A-1/1/step-01/worker.prompt.md"
    assert call["argv"][:2] == ["--message-file", str(prompt_file)] and call["stdin"] == ""
    assert git(tmp_path / "repo", "show", "orch/A-1/1:out.txt") == "hi\n"


# --- how the prompt travels ----------------------------------------------------------------------

HOSTILE = "$(touch pwned) `id` ; rm -rf / && echo $HOME | tee x > y 'q' \"dq\" {prompt} %s \\n"
OUTPUTS = {"codex": CODEX_OK, "gemini": gemini_json(), "cline": CLINE_DONE, "claude": claude_result()}


@pytest.mark.parametrize("kind", ["codex", "gemini", "cline"])
def test_argv_presets_get_the_prompt_verbatim_as_one_argv_item_with_stdin_closed(tmp_path, bin_dir, kind):
    program = fake_cli(bin_dir, kind, {"write": {"out.txt": "hi\n"}, "stdout": OUTPUTS[kind]})
    make_repo(tmp_path / "repo", [row("A-1", HOSTILE.replace("|", "\\|"))], config({"kind": kind}))
    [outcome] = runner(tmp_path / "repo").run()
    assert outcome.state == states.SUCCESS
    [call] = calls(program)
    prompt = prompt_of(tmp_path / "repo")
    assert f"# Task A-1: {HOSTILE}" in prompt
    expected = [prompt if part == "{prompt}" else part for part in PRESETS[kind].argv[1:]]
    assert call["argv"] == expected and call["stdin"] == ""
    assert not (tmp_path / "repo/.orch/worktrees/A-1/1/pwned").exists()


def test_claude_gets_a_hostile_prompt_verbatim_on_stdin(tmp_path, bin_dir):
    program = fake_cli(bin_dir, "claude", {"write": {"out.txt": "hi\n"}, "stdout": claude_result()})
    make_repo(tmp_path / "repo", [row("A-1", HOSTILE.replace("|", "\\|"))], config({"kind": "claude"}))
    runner(tmp_path / "repo").run()
    [call] = calls(program)
    assert call["stdin"] == prompt_of(tmp_path / "repo") and f"# Task A-1: {HOSTILE}" in call["stdin"]
    assert call["argv"] == list(PRESETS["claude"].argv[1:])
    assert not (tmp_path / "repo/.orch/worktrees/A-1/1/pwned").exists()


# --- a missing binary ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(PRESETS))
def test_a_preset_without_its_binary_is_a_config_error_before_any_claim(tmp_path, monkeypatch, kind):
    only_git = tmp_path / "only-git"
    only_git.mkdir()
    (only_git / "git").symlink_to(shutil.which("git"))
    make_repo(tmp_path / "repo", [row("A-1")], config({"kind": kind}))
    monkeypatch.setenv("PATH", str(only_git))
    with pytest.raises(ConfigError) as caught:
        runner(tmp_path / "repo")
    message = str(caught.value)
    assert f"program {kind!r} not found on PATH" in message
    assert f"the {kind} preset needs it: {PRESETS[kind].install}" in message
    assert "or set agents.w.argv" in message
    assert "| A-1 | PENDING |" in (tmp_path / "repo/QUEUE.md").read_text()
    assert not (tmp_path / "repo/.orch/runs").exists()


# --- the docs -------------------------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "agents.md"


def test_every_orch_yaml_example_in_the_agents_doc_is_valid():
    import yaml

    examples = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert len(examples) >= 5
    for example in examples:
        assert parse_config(yaml.safe_load(example), "docs/agents.md").agents  # unknown keys would raise


def test_the_agents_doc_has_a_section_for_every_kind():
    text = DOC.read_text()
    for kind in AGENT_KINDS:
        assert f"### {kind}" in text or f"`kind: {kind}`" in text, kind
    for kind, preset in PRESETS.items():
        assert " ".join(preset.argv) in text, kind
