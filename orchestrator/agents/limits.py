"""Rate and usage limits, for every kind of agent: how long one asks us to wait, and waiting it out.

A limit is waited out inside the step, so it does not use up the item's
attempt: the wait moves the step's deadline on (it does not count against the
step's timeout) but never past what is left of the job, and a cancel ends it
at once. A wait that would outlast the job fails the step at once, as a
timeout. Used-up quota or credit is no limit to wait out: it stays final.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.agents.base import StepRequest
from orchestrator.errors import AgentCancelledError, AgentTimeoutError

MIN_WAIT = 0.5  # a limit that says "now" (or a reset already past) must not become a tight loop
DEFAULT_WAIT = 60.0  # a limit that names no wait

_UNIT = r"ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?"
_PART = re.compile(rf"(\d+(?:\.\d+)?)\s*({_UNIT})?(?![a-z])", re.IGNORECASE)
_SCALE = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LIMIT = re.compile(r"rate.?limit|usage limit|\b429\b|too many requests|overloaded|resource.?exhausted", re.IGNORECASE)
_FINAL = re.compile(r"insufficient.?quota|credit balance|billing", re.IGNORECASE)
_EPOCH = re.compile(r"\|(\d{10})\b")  # Claude Code: "Claude AI usage limit reached|1760000400"
_AFTER = re.compile(
    rf"(?:try again|retry|resets?)\s+(?:in|after)\s+((?:\d+(?:\.\d+)?\s*(?:{_UNIT})?(?![a-z])[\s,]*(?:and\s+)?)+)",
    re.IGNORECASE,
)


def duration(text: str) -> float | None:
    """Seconds in ``"20"``, ``"1.5s"``, ``"6m0s"``, ``"20ms"`` or ``"2 hours 5 minutes"``; None if none."""
    parts = _PART.findall(text)
    if not parts:
        return None
    return sum(float(number) * _scale(unit.lower() or "s") for number, unit in parts)


def _scale(unit: str) -> float:
    return 0.001 if unit.startswith(("ms", "milli")) else _SCALE[unit[0]]


def limit_wait(message: str, now: float | None = None) -> float | None:
    """Seconds a rate or usage limit in ``message`` asks us to wait, or None when it reports no limit.

    The wait is what the message says (a reset time, "try again in 20s", "retry after 30"), else
    ``DEFAULT_WAIT``. Used-up quota or credit (billing) is None unless the message names a wait:
    waiting would not help.
    """
    after = _AFTER.search(message)
    if not _LIMIT.search(message) or (_FINAL.search(message) and not after):
        return None
    if epoch := _EPOCH.search(message):
        return max(0.0, float(epoch.group(1)) - (time.time() if now is None else now))
    seconds = duration(after.group(1)) if after else None
    return DEFAULT_WAIT if seconds is None else seconds


@dataclass
class Deadlines:
    """When a step must end (monotonic): ``step`` moves later by each rate-limit wait, never past ``job``."""

    step: float
    job: float

    @classmethod
    def of(cls, request: StepRequest, started: float) -> Deadlines:
        step = started + request.timeout_s
        return cls(step, step if request.job_left_s is None else max(step, started + request.job_left_s))


def wait_out(request: StepRequest, deadlines: Deadlines, seconds: float,
             on_rate_limit: Callable[[float], None] | None) -> None:  # fmt: skip
    """Wait out a limit: tell ``on_rate_limit``, fail at once if it outlasts the job, else wait and move the step on."""
    wait = max(seconds, MIN_WAIT)
    if on_rate_limit is not None:
        on_rate_limit(wait)
    if time.monotonic() + wait >= deadlines.job:
        raise too_long(request, wait) from None
    pause(request, wait)
    deadlines.step = min(deadlines.step + wait, deadlines.job)


def too_long(request: StepRequest, wait: float) -> AgentTimeoutError:
    """A rate-limit wait that would outlast the job (the step, when the request gives no job bound)."""
    if request.job_left_s is None:
        return AgentTimeoutError(f"a rate limit asks for {wait:g}s, more than the step's {request.timeout_s:g}s",
                                 request.timeout_s)  # fmt: skip
    return AgentTimeoutError(f"a rate limit asks for {wait:g}s, more than the job has left", request.timeout_s,
                             whole_job=True)  # fmt: skip


def pause(request: StepRequest, seconds: float) -> None:
    """Wait before the next try; a cancel ends the wait at once."""
    if request.cancel.wait(seconds):
        raise AgentCancelledError(f"{request.role} step {request.step} cancelled while waiting to retry")
