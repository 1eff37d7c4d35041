"""The supervisor's verdict: SUCCESS, CONTINUE or INTERVENTION_REQUIRED, with reason and feedback.

Read, in order, from the verdict file the supervisor wrote (``$ORCH_VERDICT_FILE``),
a structured verdict its adapter returned, its output as one JSON object, or a
last ``VERDICT: <word> [reason]`` line. A command supervisor that gives none
is judged by its exit code: 0 is SUCCESS, anything else CONTINUE with its
output as the feedback (so a test command is a supervisor). Anything
unreadable fails closed: INTERVENTION_REQUIRED.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

SUCCESS, CONTINUE, INTERVENTION = "SUCCESS", "CONTINUE", "INTERVENTION_REQUIRED"
VERDICTS = (SUCCESS, CONTINUE, INTERVENTION)
_LINE = re.compile(r"^\s*VERDICT:\s*([A-Za-z_]+)\s*[:\-]?\s*(.*)$")
FEEDBACK_LIMIT = 8000


@dataclass(frozen=True)
class Verdict:
    """What the supervisor decided and why; ``source`` says where it was read from."""

    verdict: str
    reason: str = ""
    feedback: str = ""
    source: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def from_mapping(data: object, source: str) -> Verdict:
    """A verdict from parsed JSON; anything malformed is INTERVENTION_REQUIRED."""
    if not isinstance(data, dict) or str(data.get("verdict", "")).upper() not in VERDICTS:
        return Verdict(INTERVENTION, f"unreadable verdict from {source}", "", source)
    return Verdict(str(data["verdict"]).upper(), str(data.get("reason", "")), str(data.get("feedback", "")), source)


def from_text(output: str) -> Verdict | None:
    """A verdict from the output: one JSON object, or a last ``VERDICT:`` line; None if neither."""
    stripped = output.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        try:
            return from_mapping(json.loads(stripped), "output")
        except ValueError:
            pass
    lines = [line for line in stripped.splitlines() if line.strip()]
    if lines:
        match = _LINE.match(lines[-1])
        if match:
            word = match.group(1).upper()
            if word not in VERDICTS:
                return Verdict(INTERVENTION, f"unknown verdict {word!r}", "", "output")
            return Verdict(word, match.group(2).strip(), "", "output")
    return None


def read_verdict(output: str, exit_code: int | None, verdict_file: Path, structured: dict | None,
                 *, judge_by_exit_code: bool) -> Verdict:  # fmt: skip
    """The supervisor's verdict from whichever source it used (see the module docstring)."""
    if verdict_file.exists():
        try:
            return from_mapping(json.loads(verdict_file.read_text(encoding="utf-8")), "verdict file")
        except (ValueError, UnicodeDecodeError):
            return Verdict(INTERVENTION, "verdict file is not JSON", "", "verdict file")
    if structured is not None:
        return from_mapping(structured, "structured output")
    found = from_text(output)
    if found is not None:
        return found
    if judge_by_exit_code:
        if exit_code == 0:
            return Verdict(SUCCESS, "checks passed (exit 0)", "", "exit code")
        tail = output[-FEEDBACK_LIMIT:]
        return Verdict(CONTINUE, f"checks failed (exit {exit_code})", tail, "exit code")
    return Verdict(INTERVENTION, "the supervisor gave no verdict", "", "none")
