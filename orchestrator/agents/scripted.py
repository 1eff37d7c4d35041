"""ScriptedAgent: deterministic steps for tests and the offline demo.

It is a real process like any CLI agent (so timeouts and cancel treat it the
same), running ``python -m orchestrator.agents.scripted`` with its script in
``ORCH_SCRIPT``. The script is a list of steps; call N plays step N (the last
one repeats). A step is a mapping of actions, done in this order:

    write:   {path: text, ...}      create or overwrite files in the worktree
    append:  {path: text, ...}
    replace: [{path, old, new}]     edit a file in place
    say:     text                   print it (the transcript)
    sleep:   seconds
    verdict: {verdict, reason, feedback}   write the supervisor verdict file
    exit:    code                   end with this exit code (default 0)

``on_attempt: {N: step}`` swaps in another step on attempt N, so an item can
fail once and pass on retry.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.agents.command import CommandAgent
from orchestrator.errors import ConfigError

ACTIONS = ("write", "append", "replace", "say", "sleep", "verdict", "exit", "on_attempt")


def check_script(name: str, steps: tuple) -> None:
    """Every step must be a mapping of known actions; the error names the step and key."""
    if not steps:
        raise ConfigError(f"agents.{name}.steps: a scripted agent needs at least one step")
    for number, step in enumerate(steps, 1):
        if not isinstance(step, dict):
            raise ConfigError(f"agents.{name}.steps[{number}]: expected a mapping of actions")
        for key in step:
            if key not in ACTIONS:
                raise ConfigError(f"agents.{name}.steps[{number}].{key}: unknown action ({', '.join(ACTIONS)})")


@dataclass
class ScriptedAgent(CommandAgent):
    """A CommandAgent whose program is the script player below."""

    steps: tuple = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.argv = (sys.executable, "-m", "orchestrator.agents.scripted")
        self.env = {**self.env, "ORCH_SCRIPT": json.dumps(list(self.steps))}

    def check(self) -> None:
        check_script(self.name, self.steps)


def _inside(workdir: Path, relative: str) -> Path:
    path = (workdir / relative).resolve()
    if workdir.resolve() not in path.parents:
        raise SystemExit(f"scripted agent: {relative!r} is outside the worktree")
    return path


def play(step: dict, workdir: Path, verdict_file: Path) -> int:
    """Do one step's actions; returns the exit code."""
    for relative, text in step.get("write", {}).items():
        path = _inside(workdir, relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for relative, text in step.get("append", {}).items():
        with _inside(workdir, relative).open("a") as stream:
            stream.write(text)
    for edit in step.get("replace", []):
        path = _inside(workdir, edit["path"])
        path.write_text(path.read_text().replace(edit["old"], edit["new"]))
    if "say" in step:
        print(step["say"], flush=True)
    if "sleep" in step:
        time.sleep(float(step["sleep"]))
    if "verdict" in step:
        verdict_file.write_text(json.dumps(step["verdict"]))
    return int(step.get("exit", 0))


def main() -> int:
    steps = json.loads(os.environ["ORCH_SCRIPT"])
    number = int(os.environ.get("ORCH_STEP", "1"))
    step = steps[min(number, len(steps)) - 1]
    attempt = os.environ.get("ORCH_ATTEMPT", "1")
    step = {str(k): v for k, v in step.get("on_attempt", {}).items()}.get(attempt, step)
    sys.stdin.read()  # take the prompt, as a real agent would
    return play(step, Path(os.environ.get("ORCH_WORKDIR", ".")), Path(os.environ["ORCH_VERDICT_FILE"]))


if __name__ == "__main__":
    sys.exit(main())
