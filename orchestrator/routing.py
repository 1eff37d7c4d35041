"""Pools and routing strategies for work orders: where the next task runs, and why.

Pure and clock-driven (every method takes ``now``), so tests step it. A pool
has an agent, a capacity (tasks at once) and optional budgets (requests or
tokens per minute, over a sliding minute). Pools named ``local`` (or, with
none so named, the first in orch.yaml unless it is named ``cloud``) are
local; the others are cloud.

- ``force_local``: local pools only; wait when they are full.
- ``force_cloud``: cloud pools only, within their budgets; wait otherwise.
- ``hybrid``: fill local pools to capacity, spill to cloud within budget, wait when both are full.

A pool that answered 429 (or reported its limit) is paused until its reset time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from orchestrator.config import PoolConfig

WINDOW = 60.0


@dataclass(frozen=True)
class Decision:
    """Where a task goes (``pool`` None: wait) and the reason, for execution.log."""

    pool: str | None
    reason: str
    wait: float = 0.0  # seconds until a pool may free up, when waiting on a budget or a pause


@dataclass
class PoolState:
    """One pool's live use."""

    config: PoolConfig
    local: bool
    running: int = 0
    requests: deque = field(default_factory=deque)  # start times in the last minute
    tokens: deque = field(default_factory=deque)  # (time, tokens) in the last minute
    paused_until: float = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    def _trim(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - WINDOW:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= now - WINDOW:
            self.tokens.popleft()

    def blocker(self, now: float) -> tuple[str, float] | None:
        """Why this pool cannot take a task now, and how long until it might; None if it can."""
        self._trim(now)
        if self.paused_until > now:
            return f"paused until its rate limit resets ({self.paused_until - now:.0f}s)", self.paused_until - now
        if self.running >= self.config.capacity:
            return f"full ({self.running}/{self.config.capacity})", 0.0
        rpm = self.config.requests_per_minute
        if rpm is not None and len(self.requests) >= rpm:
            wait = self.requests[0] + WINDOW - now if self.requests else WINDOW
            return f"request budget spent ({len(self.requests)}/{rpm:g} per minute)", wait
        tpm = self.config.tokens_per_minute
        used = sum(count for _, count in self.tokens)
        if tpm is not None and used >= tpm:
            wait = self.tokens[0][0] + WINDOW - now if self.tokens else WINDOW
            return f"token budget spent ({used}/{tpm:g} per minute)", wait
        return None

    def describe(self, now: float) -> str:
        budget = f", budget {len(self.requests)}/{self.config.requests_per_minute:g}" if (
            self.config.requests_per_minute is not None) else ""  # fmt: skip
        return f"{self.name} {self.running}/{self.config.capacity}{budget}"


class Router:
    """Decides, for each task, which pool runs it."""

    def __init__(self, pools: dict[str, PoolConfig], strategy: str) -> None:
        names = list(pools)
        local_names = [n for n in names if n == "local"] or [n for n in names[:1] if n != "cloud"]
        self.pools = {name: PoolState(config, name in local_names) for name, config in pools.items()}
        self.strategy = strategy

    def _candidates(self) -> list[PoolState]:
        local = [p for p in self.pools.values() if p.local]
        cloud = [p for p in self.pools.values() if not p.local]
        return {"force_local": local, "force_cloud": cloud}.get(self.strategy, local + cloud)

    def decide(self, now: float) -> Decision:
        """The first pool, by strategy, that can take a task now; else why we wait."""
        reasons, waits = [], []
        for pool in self._candidates():
            blocked = pool.blocker(now)
            if blocked is None:
                return Decision(pool.name, self._why(pool, reasons, now))
            reasons.append(f"{pool.name} {blocked[0]}")
            waits.append(blocked[1])
        if not self._candidates():
            return Decision(None, f"{self.strategy}: no pool of that kind in orch.yaml")
        soonest = min((w for w in waits if w > 0), default=0.0)
        return Decision(None, f"{self.strategy}: wait ({'; '.join(reasons)})", soonest)

    def _why(self, pool: PoolState, skipped: list[str], now: float) -> str:
        label = {"force_local": "Force local", "force_cloud": "Force cloud"}.get(self.strategy, "Hybrid")
        kind = "local" if pool.local else "cloud"
        spill = f"; {', '.join(skipped)}" if skipped else ""
        return f"{label}: {kind} pool {pool.describe(now)}{spill}"

    def started(self, name: str, now: float) -> None:
        pool = self.pools[name]
        pool.running += 1
        pool.requests.append(now)

    def unstarted(self, name: str, at: float) -> None:
        """Take back a ``started(name, at)`` whose claim found nothing: its place and its request."""
        pool = self.pools[name]
        pool.running = max(0, pool.running - 1)
        if at in pool.requests:
            pool.requests.remove(at)

    def finished(self, name: str, now: float, tokens: int = 0) -> None:
        pool = self.pools[name]
        pool.running = max(0, pool.running - 1)
        if tokens:
            pool.tokens.append((now, tokens))

    def pause(self, name: str, until: float) -> None:
        """The pool answered 429 or reported its limit: send it nothing until ``until``."""
        pool = self.pools[name]
        pool.paused_until = max(pool.paused_until, until)

    def usable(self) -> bool:
        """Whether the strategy has any pool to use at all."""
        return bool(self._candidates())

    def capacity(self) -> int:
        return sum(pool.config.capacity for pool in self._candidates())
