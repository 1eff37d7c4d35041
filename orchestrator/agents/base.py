"""The agent interface: one method, ``step(StepRequest) -> StepResult``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

ROLES = ("worker", "supervisor")


@dataclass(frozen=True)
class StepRequest:
    """One call of an agent: who, where, what to do, and for how long."""

    item_id: str
    attempt: int
    step: int
    role: str
    prompt: str
    workdir: Path
    timeout_s: float
    prompt_file: Path
    log_file: Path
    verdict_file: Path
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)
    env: dict[str, str] = field(default_factory=dict, compare=False)
    job_left_s: float | None = None  # what is left of the job: rate-limit waits may run the step past timeout_s


@dataclass(frozen=True)
class StepResult:
    """What the agent did: its output, exit code, time and usage (tokens, cost)."""

    output: str
    exit_code: int | None = 0
    duration_s: float = 0.0
    usage: dict = field(default_factory=dict)
    verdict: dict | None = None  # a structured verdict the agent returned, if any
    log_sha256: str = ""
    log_bytes: int = 0
    intervention: str | None = None  # the agent itself asked for a human (a question, a denied permission)

    def as_dict(self) -> dict:
        return {
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
            "usage": self.usage,
            "log_sha256": self.log_sha256,
            "log_bytes": self.log_bytes,
            **({"intervention": self.intervention} if self.intervention else {}),
        }


class Agent(Protocol):
    """Anything that can take a step: a CLI, an HTTP model, a script."""

    name: str

    def step(self, request: StepRequest) -> StepResult:
        """Do one step in ``request.workdir``.

        :raises AgentTimeoutError: it ran past ``request.timeout_s``.
        :raises AgentCancelledError: ``request.cancel`` was set while it ran.
        :raises AgentError: it could not run or failed.
        """
        ...

    def check(self) -> None:
        """Raise ``ConfigError`` if it cannot run here (a missing binary, say)."""
        ...
