"""Coding-agent CLI presets: their argv, and how to read each one's structured output.

No agent's exit code alone is trusted: a step's outcome comes from what the
agent printed. Each parser returns the agent's final text, its usage (tokens,
cost), and whether the step failed or needs a human.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from orchestrator.agents.command import Parsed
from orchestrator.agents.limits import limit_wait


def _json_objects(stdout: str) -> list[dict]:
    """Every line of ``stdout`` that is a JSON object (JSONL), skipping anything else."""
    found = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


def _last_object(stdout: str) -> dict | None:
    """The whole output as one JSON object, else its last JSON line."""
    try:
        value = json.loads(stdout)
        if isinstance(value, dict):
            return value
    except ValueError:
        pass
    objects = _json_objects(stdout)
    return objects[-1] if objects else None


def parse_claude(stdout: str, exit_code: int | None) -> Parsed:
    """``claude -p --output-format json``: one result object."""
    result = _last_object(stdout)
    if result is None or "subtype" not in result and "result" not in result:
        return Parsed(stdout, error=f"no JSON result from claude (exit {exit_code})")
    usage = dict(result.get("usage") or {})
    for key in ("total_cost_usd", "num_turns", "duration_ms"):
        if key in result:
            usage[key] = result[key]
    text = str(result.get("result", ""))
    denials = result.get("permission_denials") or []
    if denials:
        tools = ", ".join(sorted({str(d.get("tool_name", "?")) for d in denials if isinstance(d, dict)}))
        return Parsed(text, usage, intervention=f"permission denied for {tools} (allow it in agents.<name>.argv)")
    subtype = result.get("subtype", "")
    if subtype == "error_max_turns":
        return Parsed(text, usage, intervention=f"claude reached its turn limit after {result.get('num_turns')} turns")
    if result.get("is_error") or (subtype and subtype != "success"):
        what = subtype if subtype and subtype != "success" else "an error"
        return Parsed(text, usage, error=f"claude reported {what}: {text[:200]}", retry_after=limit_wait(text))
    return Parsed(text, usage)


def parse_codex(stdout: str, exit_code: int | None) -> Parsed:
    """``codex exec --json``: JSONL events; a failed turn or an error fails the step, whatever the exit code."""
    events = _json_objects(stdout)
    if not events:
        return Parsed(stdout, error=f"no JSON events from codex (exit {exit_code})")
    usage: dict = {}
    messages = []
    for event in events:
        kind = event.get("type", "")
        if kind == "turn.failed":
            message = (event.get("error") or {}).get("message", "turn failed")
            return Parsed("\n".join(messages), usage, error=f"codex turn failed: {message}",
                          retry_after=limit_wait(str(message)))  # fmt: skip
        if kind == "error":
            message = str(event.get("message", ""))
            return Parsed("\n".join(messages), usage, error=f"codex error: {message}", retry_after=limit_wait(message))
        if kind == "turn.completed":
            for key, value in (event.get("usage") or {}).items():
                usage[key] = usage.get(key, 0) + value
        item = event.get("item") or {}
        if kind == "item.completed" and item.get("type") in ("agent_message", "assistant_message"):
            messages.append(str(item.get("text", "")))
    if not any(event.get("type") == "turn.completed" for event in events):
        return Parsed("\n".join(messages), usage, error=f"codex ended without a completed turn (exit {exit_code})")
    return Parsed("\n".join(messages), usage)


GEMINI_EXIT = {42: "input error (invalid prompt or arguments)", 53: "turn limit exceeded"}


def parse_gemini(stdout: str, exit_code: int | None) -> Parsed:
    """``gemini -p --output-format json``: ``{response, stats, error}``; exit 42 input error, 53 turn limit."""
    result = _last_object(stdout) or {}
    usage = _gemini_usage(result.get("stats") or {})
    text = str(result.get("response", ""))
    if exit_code == 53:
        return Parsed(text, usage, intervention="gemini exceeded its turn limit")
    error = result.get("error")
    if error or exit_code in GEMINI_EXIT or exit_code:
        detail = (error or {}).get("message") if isinstance(error, dict) else error
        why = detail or GEMINI_EXIT.get(exit_code or 0, f"exit {exit_code}")
        code = " ".join(str(error.get(key, "")) for key in ("code", "status")) if isinstance(error, dict) else ""
        return Parsed(text, usage, error=f"gemini failed: {why}", retry_after=limit_wait(f"{code} {why}"))
    if "response" not in result:
        return Parsed(stdout, usage, error="no JSON response from gemini")
    return Parsed(text, usage)


def _gemini_usage(stats: dict) -> dict:
    usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    for model in (stats.get("models") or {}).values():
        tokens = model.get("tokens") or {}
        usage["input_tokens"] += int(tokens.get("prompt", 0))
        usage["output_tokens"] += int(tokens.get("candidates", 0))
        usage["total_tokens"] += int(tokens.get("total", 0))
    return usage if usage["total_tokens"] else {}


CLINE_HUMAN_ASKS = {"followup", "plan_mode_respond", "mistake_limit_reached", "api_req_failed", "resume_task",
                    "command", "tool", "browser_action_launch", "use_mcp_server"}  # fmt: skip


def parse_cline(stdout: str, exit_code: int | None) -> Parsed:
    """``cline --json``: JSON lines of say/ask messages; a human ask is INTERVENTION_REQUIRED."""
    messages = [m for m in _json_objects(stdout) if not m.get("partial")]
    if not messages:
        return Parsed(stdout, error=f"no JSON messages from cline (exit {exit_code})")
    said = [str(m.get("text", "")) for m in messages if m.get("type") == "say" and m.get("say") == "text"]
    for message in messages:
        if message.get("type") == "say" and message.get("say") == "completion_result":
            return Parsed(str(message.get("text", "")), {})
        if message.get("type") == "ask" and message.get("ask") in CLINE_HUMAN_ASKS:
            question = str(message.get("text", ""))[:200]
            return Parsed("\n".join(said), {}, intervention=f"cline asks ({message.get('ask')}): {question}")
    return Parsed("\n".join(said), {}, error="cline ended without a completion_result")


def parse_aider(stdout: str, exit_code: int | None) -> Parsed:
    """aider prints text only: its outcome is judged by the diff it leaves."""
    return Parsed(stdout)


@dataclass(frozen=True)
class Preset:
    """A coding-agent CLI: default argv, how the prompt reaches it, how to read its output."""

    argv: tuple[str, ...]
    parse: object
    stdin: str
    install: str
    judge_by_diff: bool = False


PRESETS = {
    "claude": Preset(("claude", "-p", "--output-format", "json", "--permission-mode", "acceptEdits"),
                     parse_claude, "prompt", "install Claude Code: npm install -g @anthropic-ai/claude-code"),
    "codex": Preset(("codex", "exec", "--json", "--sandbox", "workspace-write", "{prompt}"),
                    parse_codex, "closed", "install Codex: npm install -g @openai/codex"),
    "gemini": Preset(("gemini", "--output-format", "json", "--approval-mode", "auto_edit", "-p", "{prompt}"),
                     parse_gemini, "closed", "install Gemini CLI: npm install -g @google/gemini-cli"),
    "cline": Preset(("cline", "--json", "{prompt}"), parse_cline, "closed", "install Cline: npm install -g cline"),
    "aider": Preset(("aider", "--message-file", "{prompt_file}", "--yes-always", "--no-auto-commits", "--no-pretty",
                     "--no-stream"), parse_aider, "closed", "install aider: pip install aider-chat",
                    judge_by_diff=True),
}  # fmt: skip
