"""The conductor of a work order: ``orch run --job``'s routing, audit trail and results.

It hooks into the Runner: before each claim it asks the Router for a pool (or
says wait), and it writes every movement to the job's ``execution.log``,
each finished task to ``results.jsonl``, and keeps ``work_order.yaml``'s
counters in step with the queue: recomputed from it on a thread of their own
after attempts end (at most every ``COUNTERS_EVERY`` seconds, since each
recount reads the whole queue) and once more when the run ends. ``orch job
status`` counts from the queue itself, so it is exact at any moment.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from orchestrator import audit
from orchestrator import manifest as states
from orchestrator.config import STRATEGY_ALIASES, Config
from orchestrator.errors import ConfigError, OrchError
from orchestrator.model import Claim, Item, Status
from orchestrator.routing import Router
from orchestrator.runner import Outcome, Route, RunHooks
from orchestrator.store.base import Store
from orchestrator.verdict import Verdict
from orchestrator.workorder import Package, append_result, job_items, local_now, refresh_counters

COUNTERS_EVERY = 0.5  # seconds: how far work_order.yaml's counters may lag the queue while a run goes
COUNTERS_JOIN = 60.0
END_EVENTS = {states.SUCCESS: audit.COMPLETED, states.CANCELED: audit.CANCELED,
              states.INTERVENTION_REQUIRED: audit.INTERVENTION, states.FAILED: audit.FAILED}  # fmt: skip


class Conductor(RunHooks):
    """Routes a job's tasks to pools and keeps its audit trail."""

    def __init__(self, store: Store, config: Config, package: Package) -> None:
        self.store, self.config, self.package = store, config, package
        self.strategy = str(package.read_order().get("routing_strategy") or config.strategy)
        routing = STRATEGY_ALIASES.get(self.strategy, self.strategy)
        self.router = Router(config.pools, routing) if config.pools else None
        if self.router is not None and not self.router.usable():
            raise ConfigError(
                f"work order {package.job_id}: strategy {self.strategy} has no pool of that kind in orch.yaml "
                f"(pools: {', '.join(config.pools)}; a pool named 'local' is local, the others cloud)"
            )
        self.lock = threading.Lock()
        self.last_wait_reason = ""
        self.backlog_key = str(package.read_order().get("backlog_key", f"job:{package.job_id}:backlog"))
        self._recount = threading.Event()  # an attempt ended: the counters may have changed
        self._closing = threading.Event()
        self._counter: threading.Thread | None = None

    def attach(self, runner) -> None:
        """Let each pool's agent pause every pool that uses it when it reports a rate or usage limit."""
        for agent_name in {pool.agent for pool in self.config.pools.values()}:
            agent = runner.agent(agent_name)
            if hasattr(agent, "on_rate_limit"):
                pools = [pool.name for pool in self.config.pools.values() if pool.agent == agent_name]
                agent.on_rate_limit = lambda seconds, names=pools: [self.pause(name, seconds) for name in names]

    def log(self, actor: str, event: str, message: str) -> None:
        prefix = f"{self.package.job_id}-"
        self.package.event(actor[len(prefix) :] if actor.startswith(prefix) else actor, event, message)

    # --- run lifecycle ------------------------------------------------------------------

    def run_started(self) -> None:
        backlog = sum(item.status is Status.PENDING for item in job_items(self.store, self.package.job_id))
        with self.package.locked():
            order = self.package.read_order()
            order["status"] = "running"
            order.setdefault("execution", {})["started_at"] = order["execution"].get("started_at") or local_now()
            order["execution"]["completed_at"] = None
            self.package.write_order(order)
        self.log(
            audit.SYSTEM, audit.JOB_STARTED,
            f"Job {self.package.job_id} started. {backlog} tasks in backlog: {self.backlog_key}",
        )  # fmt: skip
        pools = ", ".join(f"{p.name} (agent {p.agent}, capacity {p.capacity})" for p in self.config.pools.values())
        self.log(audit.SYSTEM, audit.DECISION, f"Conductor started with strategy: {self.strategy}"
                 + (f"; pools: {pools}" if pools else "; no pools: every task uses the worker agent"))  # fmt: skip
        self._closing.clear()
        self._recount.clear()
        self._counter = threading.Thread(target=self._keep_counters, name="orch-counters", daemon=True)
        self._counter.start()

    def run_finished(self, outcomes: list[Outcome]) -> None:
        self.run_stopped()
        order = refresh_counters(self.store, self.package)
        items = job_items(self.store, self.package.job_id)
        done = sum(item.status is Status.DONE for item in items)
        failed = sum(item.status is Status.FAILED for item in items)  # the same count as execution.tasks_failed
        blocked = sum(item.status is Status.BLOCKED for item in items)
        still_open = len(items) - done - failed - blocked
        self.log(audit.SYSTEM, audit.JOB_COMPLETED,
                 f"Job {self.package.job_id} finished. Success: {done}/{len(items)}, Failed: {failed}"
                 + (f", Blocked: {blocked}" if blocked else "")
                 + (f", still open: {still_open}" if still_open else "")
                 + f" (status {order.get('status')})")  # fmt: skip

    # --- routing ------------------------------------------------------------------------

    def route(self, now: float) -> Route:
        """The pool for the next claim, reserved in it (runner threads route and claim concurrently)."""
        if self.router is None:
            return Route(reason="no pools: the worker agent")
        with self.lock:
            decision = self.router.decide(now)
            if decision.pool is not None:
                self.router.started(decision.pool, now)  # given back by unclaimed() if the claim finds nothing
            logged, self.last_wait_reason = self.last_wait_reason, decision.reason if decision.pool is None else ""
        if decision.pool is None:
            if decision.reason != logged:
                self.log(audit.SYSTEM, audit.DECISION, decision.reason)
            return Route(reason=decision.reason, wait=decision.wait or 0.5)
        pool = self.config.pools[decision.pool]
        return Route(agent=pool.agent, pool=pool.name, reason=decision.reason, at=now)

    def unclaimed(self, route: Route) -> None:
        if self.router is not None and route.pool:
            with self.lock:
                self.router.unstarted(route.pool, route.at)

    def claimed(self, claim: Claim, route: Route) -> None:
        self.log(claim.item.id, audit.PULLED, f"Pulled from {self.backlog_key} (attempt {claim.attempt})")
        target = f"pool {route.pool} (agent {route.agent})" if route.pool else f"agent {self.config.worker}"
        self.log(claim.item.id, audit.ROUTED, f"Routed to {target} ({route.reason})")
        self.log(
            claim.item.id, audit.STARTED, f"attempt {claim.attempt} on branch orch/{claim.item.id}/{claim.attempt}"
        )
        # A claim changes no counter: run_started already made the order "running".

    def pause(self, pool: str, seconds: float) -> None:
        """A pool's agent was rate limited: route nothing to it until the reset."""
        if self.router is None or pool not in self.router.pools:
            return
        with self.lock:
            self.router.pause(pool, time.time() + seconds)
        self.log(audit.SYSTEM, audit.DECISION, f"pool {pool} paused for {seconds:.0f}s: rate limited")

    # --- progress -----------------------------------------------------------------------

    def step(self, item: Item, attempt: int, step: int, verdict: Verdict) -> None:
        reason = f" - {verdict.reason}" if verdict.reason else ""
        self.log(item.id, audit.STEP, f"attempt {attempt} step {step}: {verdict.verdict}{reason}")

    def ended(self, outcome: Outcome, item: Item | None, route: Route) -> None:
        if self.router is not None and route.pool:
            tokens = int(outcome.usage.get("total_tokens", 0) or 0)
            with self.lock:
                self.router.finished(route.pool, time.time(), tokens)
        retried = item is not None and item.status is Status.PENDING and outcome.state == states.FAILED
        event = audit.RETRIED if retried else END_EVENTS.get(outcome.state, audit.FAILED)
        detail = f"Finished in {outcome.duration_s:.1f}s" if outcome.state == states.SUCCESS else outcome.note
        if retried:
            detail = f"{outcome.note}; retry {item.attempts + 1} queued"
        self.log(outcome.item_id, event, detail)
        if item is not None and not retried and outcome.state != states.CANCELED:
            append_result(self.package, _result(outcome, item, route))
        if self._counter is None:  # hooked in without run_started (a test stepping it): count now
            refresh_counters(self.store, self.package)
        else:
            self._recount.set()

    # --- counters -----------------------------------------------------------------------

    def _keep_counters(self) -> None:
        """Recount after attempts end, at most every ``COUNTERS_EVERY`` seconds, until the run stops."""
        while True:
            self._recount.wait(COUNTERS_EVERY)
            if self._closing.is_set():
                return
            if not self._recount.is_set():
                continue
            self._recount.clear()
            try:
                refresh_counters(self.store, self.package)
            except OrchError:  # the queue is busy or unreachable for now: the next end or the run's end recounts
                self._recount.set()
            self._closing.wait(COUNTERS_EVERY)

    def run_stopped(self) -> None:
        """The run loop ended, however: stop the counting thread (run_finished, if called, recounts)."""
        counter, self._counter = self._counter, None
        if counter is not None:
            self._closing.set()
            self._recount.set()  # wake it now
            counter.join(COUNTERS_JOIN)  # a recount stuck on a busy queue only delays the run's end


def _result(outcome: Outcome, item: Item, route: Route) -> dict:
    # usage and cost of the task: every attempt's (.orch/runs/<id>/<attempt>/job_manifest.json), not the last one's
    usage = states.item_usage(Path(outcome.manifest).parents[3], outcome.item_id) or outcome.usage
    return {
        "id": outcome.item_id, "status": item.status.value, "attempts": item.attempts,
        "duration_s": round(outcome.duration_s, 3), "pool": route.pool or "", "agent": route.agent or "",
        "branch": outcome.branch, "final_commit": outcome.commit, "usage": usage,
        "cost_usd": usage.get("cost_usd", usage.get("total_cost_usd", 0)),
        "note": outcome.note, "finished": local_now(),
    }  # fmt: skip
