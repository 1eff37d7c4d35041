"""CommandAgent: runs an agent CLI from an argv template, never through a shell.

The prompt reaches the agent on stdin and as ``{prompt_file}``; row text is
data, so it only ever fills whole argv items. The agent runs in its own
process group, registered under ``.orch/procs/``; a timeout or a cancel stops
the whole group (SIGTERM, a grace period, SIGKILL), and so does the end of a
step, so nothing it started is left running.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.agents.base import StepRequest, StepResult
from orchestrator.agents.limits import Deadlines, wait_out
from orchestrator.errors import AgentCancelledError, AgentError, AgentTimeoutError, ConfigError
from orchestrator.procs import AgentProcess, ProcessRegistry, start_time, stop_group, this_runner

PLACEHOLDERS = ("prompt", "prompt_file", "workdir", "id", "role", "step", "attempt", "verdict_file")
TAIL_BYTES = 64 * 1024
POLL_SECONDS = 0.05


def fill(template: tuple[str, ...], request: StepRequest) -> list[str]:
    """The argv for one step: placeholders replaced inside each item, nothing else."""
    values = {
        "prompt": request.prompt, "prompt_file": str(request.prompt_file), "workdir": str(request.workdir),
        "id": request.item_id, "role": request.role, "step": str(request.step), "attempt": str(request.attempt),
        "verdict_file": str(request.verdict_file),
    }  # fmt: skip
    return [_fill_one(part, values) for part in template]


def _fill_one(part: str, values: dict[str, str]) -> str:
    """One argv item; a placeholder's value is never scanned for more placeholders."""
    return re.sub(r"\{(" + "|".join(values) + r")\}", lambda match: values[match.group(1)], part)


def step_env(request: StepRequest, extra: dict[str, str]) -> dict[str, str]:
    """The agent's environment: ours, the agent's own settings, and ``ORCH_*`` facts."""
    return {
        **os.environ, **extra, **request.env,
        "ORCH_ID": request.item_id, "ORCH_ROLE": request.role, "ORCH_STEP": str(request.step),
        "ORCH_ATTEMPT": str(request.attempt), "ORCH_WORKDIR": str(request.workdir),
        "ORCH_PROMPT_FILE": str(request.prompt_file), "ORCH_VERDICT_FILE": str(request.verdict_file),
    }  # fmt: skip


def file_digest(path: Path) -> tuple[str, int]:
    digest, size, _ = digest_and_tail(path)
    return digest, size


def digest_and_tail(path: Path, limit: int = TAIL_BYTES) -> tuple[str, int, str]:
    """A log's sha256, its size and its last ``limit`` bytes decoded leniently, in one read."""
    digest = hashlib.sha256()
    size, tail = 0, b""
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 16):
            digest.update(chunk)
            size += len(chunk)
            tail = (tail + chunk)[-limit:]
    return digest.hexdigest(), size, tail.decode("utf-8", errors="replace")


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a log, decoded leniently."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        stream.seek(max(0, size - limit))
        return stream.read().decode("utf-8", errors="replace")


@dataclass
class ProcessRun:
    """One agent process from start to finish, with its group stopped at the end."""

    argv: list[str]
    request: StepRequest
    env: dict[str, str]
    registry: ProcessRegistry | None
    grace: float = 5.0
    stdin_mode: str = "prompt"
    started_at: float = field(default_factory=time.monotonic)
    deadline: float | None = None  # when it must end (monotonic); default: ``timeout_s`` after its start

    def run(self) -> int:
        """The exit code; raises on timeout or cancel after stopping the group."""
        stderr_file = self.request.log_file.with_suffix(".stderr.log")
        stdin_path = self.request.prompt_file if self.stdin_mode == "prompt" else Path(os.devnull)
        with stdin_path.open("rb") as stdin, self.request.log_file.open("ab") as log, stderr_file.open("ab") as err:
            try:
                process = subprocess.Popen(
                    self.argv, cwd=self.request.workdir, stdin=stdin, stdout=log, stderr=err,
                    env=self.env, start_new_session=True,
                )  # fmt: skip
            except OSError as error:
                raise AgentError(f"cannot start {self.argv[0]}: {error.strerror}") from None
        entry = self._register(process)
        try:
            return self._wait(process)
        finally:
            stop_group(process.pid, self.grace, process.poll)  # children it left behind, too
            if entry is not None and self.registry is not None:
                self.registry.unregister(entry)

    def _register(self, process: subprocess.Popen) -> AgentProcess | None:
        if self.registry is None:
            return None
        runner_pid, runner_started = this_runner()
        entry = AgentProcess(
            self.request.item_id, self.request.attempt, self.request.role, process.pid, process.pid,
            start_time(process.pid) or 0, runner_pid, runner_started,
        )  # fmt: skip
        self.registry.register(entry)
        return entry

    def _wait(self, process: subprocess.Popen) -> int:
        deadline = self.started_at + self.request.timeout_s if self.deadline is None else self.deadline
        while True:
            try:
                return process.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass
            if self.request.cancel.is_set():
                stop_group(process.pid, self.grace, process.poll)
                process.wait()
                raise AgentCancelledError(f"{self.request.role} step {self.request.step} cancelled")
            if time.monotonic() >= deadline:
                stop_group(process.pid, self.grace, process.poll)
                process.wait()
                seconds = self.request.timeout_s
                raise AgentTimeoutError(f"{self.argv[0]} ran past {seconds:g}s", seconds)


@dataclass(frozen=True)
class Parsed:
    """What a preset read from an agent's structured output."""

    text: str
    usage: dict = field(default_factory=dict)
    error: str | None = None  # the step failed, whatever the exit code said
    intervention: str | None = None  # the agent needs a human
    retry_after: float | None = None  # a rate or usage limit: seconds to wait before running the step again


@dataclass
class CommandAgent:
    """Runs ``argv`` (a template) for each step; the prompt goes on stdin unless ``stdin`` is "closed"."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    registry: ProcessRegistry | None = None
    grace: float = 5.0
    parse: Callable[[str, int | None], Parsed] | None = None
    stdin: str = "prompt"
    judge_by_diff: bool = False
    install_hint: str = ""
    judged_by_exit_code: bool = True  # a supervisor with no verdict: exit 0 is SUCCESS
    on_rate_limit: Callable[[float], None] | None = None  # a conductor pauses the agent's pools

    def check(self) -> None:
        if not self.argv:
            raise ConfigError(f"agents.{self.name}.argv: give the command to run, as a list")
        program = self.argv[0]
        if "{" not in program and shutil.which(program) is None and not Path(program).exists():
            hint = f"; {self.install_hint}" if self.install_hint else ""
            raise ConfigError(f"agents.{self.name}: program {program!r} not found on PATH{hint}")

    def step(self, request: StepRequest) -> StepResult:
        request.log_file.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        deadlines = Deadlines.of(request, started)
        while True:
            code = self._run(request, deadlines.step)
            digest, size, output = digest_and_tail(request.log_file)
            if self.parse is None:
                return StepResult(output, code, time.monotonic() - started, log_sha256=digest, log_bytes=size)
            parsed = self.parse(read_stdout(request.log_file), code)
            if parsed.retry_after is None:
                break
            # A limit is waited out here, so it does not use up the attempt; the next try is a fresh process.
            wait_out(request, deadlines, parsed.retry_after, self.on_rate_limit)
            for log in (request.log_file, request.log_file.with_suffix(".stderr.log")):
                log.unlink(missing_ok=True)  # the logs are the try that counts
        if parsed.error:
            raise AgentError(f"{self.name}: {parsed.error}", usage=parsed.usage, exit_code=code)
        if self.judge_by_diff and not has_changes(request.workdir):
            raise AgentError(f"{self.name} changed no file: {' '.join(parsed.text.split())[-200:]}",
                             usage=parsed.usage, exit_code=code)  # fmt: skip
        duration = time.monotonic() - started
        return StepResult(parsed.text, code, duration, parsed.usage, None, digest, size, parsed.intervention)

    def _run(self, request: StepRequest, deadline: float) -> int:
        """One try of the step: a fresh process, ended by ``deadline``."""
        argv = fill(self.argv, request)
        env = step_env(request, self.env)
        return ProcessRun(argv, request, env, self.registry, self.grace, self.stdin, deadline=deadline).run()


def read_stdout(log_file: Path) -> str:
    """The agent's whole standard output (its structured result)."""
    return log_file.read_text(encoding="utf-8", errors="replace")


def has_changes(workdir: Path) -> bool:
    done = subprocess.run(["git", "status", "--porcelain"], cwd=workdir, capture_output=True, text=True)
    return bool(done.stdout.strip())
