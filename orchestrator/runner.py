"""The run: claim items, drive each attempt in its own worktree, commit evidence, end it.

``Runner.tick()`` claims one runnable item and starts its attempt on a thread
(the agents are processes; a thread only waits on them). ``Runner.run()``
keeps up to ``workers`` attempts going until nothing is runnable (a drain, like
rq's burst mode), or after one item with ``once``. In ``run()`` a thread whose
attempt ended claims the next item itself, so claims overlap each other and the
running attempts (the markdown store then applies concurrent claims in one
write) instead of queueing behind one claiming thread; the main thread fills
slots left empty and decides when the run is over. A heartbeat thread keeps
every lease alive and stops an attempt whose lease was lost (cancelled or
reaped); a step with no agent process (an HTTP model) also watches its item
(``stepwatch``). Agents left by a runner that died are stopped at start-up.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import manifest as states
from orchestrator import prompts
from orchestrator.agents import Agent, StepRequest, StepResult, get_agent
from orchestrator.config import Config
from orchestrator.errors import (
    AgentCancelledError,
    AgentError,
    AgentTimeoutError,
    BusyError,
    ConfigError,
    LeaseLostError,
    OrchError,
)  # fmt: skip
from orchestrator.manifest import JobManifest
from orchestrator.model import NOTE_SEPARATOR, Claim, Item, Status
from orchestrator.procs import ProcessRegistry
from orchestrator.stepwatch import cancel_when
from orchestrator.store.base import Store
from orchestrator.verdict import CONTINUE, INTERVENTION, SUCCESS, Verdict, read_verdict
from orchestrator.workorder import task_prompt
from orchestrator.worktree import (
    Worktree,
    Worktrees,
    commit_all,
    commit_identity,
    copy_file,
    maintain,
    open_repo,
    resolve_base,
    stage_all,
    write_json,
)  # fmt: skip

TRANSCRIPT_CAP = 64 * 1024
EVIDENCE_DIR = ".orch-evidence"
MAINTAIN_EVERY = 200  # evidence commits between checks for git's auto maintenance (and one at the end of a run)


def default_owner() -> str:
    return f"runner-{os.getpid()}@{socket.gethostname()}"


@dataclass
class RunOptions:
    """What ``orch run`` was asked to do."""

    workers: int = 1
    item_id: str | None = None
    job: str | None = None
    once: bool = False
    job_timeout: float | None = None
    max_steps: int | None = None
    grace: float = 5.0
    owner: str = field(default_factory=default_owner)
    poll: float = 0.1
    wait_for_retries: bool = True
    forever: bool = False  # keep waiting for new work instead of ending when the queue is drained
    idle_poll: float = 5.0


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended."""

    item_id: str
    attempt: int
    state: str
    note: str
    steps: int
    manifest: Path
    branch: str = ""
    duration_s: float = 0.0
    usage: dict = field(default_factory=dict, hash=False, compare=False)
    commit: str = ""


@dataclass(frozen=True)
class Route:
    """Where the next claim may run: ``agent`` overrides the worker; ``wait`` says hold off."""

    agent: str | None = None
    pool: str | None = None
    reason: str = ""
    wait: float | None = None
    at: float = 0.0  # when it was decided (the pool's request budget counts it from then)


class RunHooks:
    """What a conductor (work orders, routing, audit) can hook into; the defaults do nothing."""

    def route(self, now: float) -> Route:
        """Where the next claim may run. A pool's place is held from here: ``ended`` frees it, or ``unclaimed``."""
        return Route()

    def claimed(self, claim: Claim, route: Route) -> None:
        pass

    def unclaimed(self, route: Route) -> None:
        """The claim after ``route`` found nothing (or failed): give back what ``route`` reserved."""

    def step(self, item: Item, attempt: int, step: int, verdict: Verdict) -> None:
        pass

    def ended(self, outcome: Outcome, item: Item | None, route: Route) -> None:
        pass

    def run_started(self) -> None:
        pass

    def run_stopped(self) -> None:
        """The run loop ended, normally or by an error; before ``run_finished``."""

    def run_finished(self, outcomes: list[Outcome]) -> None:
        pass


class Runner:
    """Claims and runs items; see the module docstring."""

    def __init__(self, store: Store, config: Config, root: Path, options: RunOptions | None = None,
                 report: Callable[[str], None] = print, hooks: RunHooks | None = None) -> None:  # fmt: skip
        self.store, self.config, self.root = store, config, Path(root).resolve()
        self.options = options or RunOptions()
        self.report = report
        self.hooks = hooks or RunHooks()
        self.route_wait: float | None = None
        self.runtime = self.root / ".orch"
        self.registry = ProcessRegistry(self.runtime)
        self.repo = open_repo(self.root)
        self.base = resolve_base(self.repo, config.base_ref)
        self.worktrees = Worktrees(self.repo, self.runtime, config.worktree_pool)
        self.identity = commit_identity(self.repo)  # worktrees share the repository's config
        self.commits = 0
        self.agents: dict[str, Agent] = {}
        self.active: dict[str, tuple[threading.Thread, threading.Event, Claim]] = {}
        self.attempts: dict[str, Attempt] = {}  # the running ones, for live progress
        self.outcomes: list[Outcome] = []
        self.slots = 0  # attempt threads alive (running an attempt or claiming the next)
        self._done = threading.Condition()
        self._stop = threading.Event()
        self._follow_on = False  # run(): a thread whose attempt ended claims the next one
        self.check()

    # --- configuration ------------------------------------------------------------

    def agent(self, name: str) -> Agent:
        if name not in self.agents:
            spec = self.config.agents.get(name)
            if spec is None:
                raise ConfigError(f"{self.config.path}: no agent named {name!r} under agents")
            self.agents[name] = get_agent(spec, self.registry, self.options.grace)
            self.agents[name].check()
        return self.agents[name]

    def check(self) -> None:
        """Fail before claiming anything if the worker, the supervisor or an agent a PENDING row names cannot run."""
        for role in ("worker", "supervisor"):
            name = getattr(self.config, role)
            if not name:
                raise ConfigError(f"{self.config.path}: {role}: name the agent for {role} steps (see orch init)")
            self.agent(name)
        named = {item.agent: item.id for item in self.store.items(Status.PENDING) if item.agent}
        for name, item_id in sorted(named.items()):
            try:
                self.agent(name)
            except ConfigError as error:
                raise ConfigError(f"{error} (item {item_id} names it in its agent column)") from None

    # --- claiming and driving -----------------------------------------------------

    def tick(self, now: float | None = None) -> Claim | None:
        """Claim one runnable item and start its attempt; None if nothing is runnable (or no pool is free)."""
        route, claim = self._claim(now)
        self.route_wait = route.wait
        if claim is None:
            return None
        attempt = self._attempt(claim, route)
        thread = threading.Thread(target=self._drive, args=(attempt,), name=f"orch-{claim.item.id}", daemon=True)
        with self._done:
            self.slots += 1
            self._track(attempt, thread)
        thread.start()
        return claim

    def _claim(self, now: float | None = None) -> tuple[Route, Claim | None]:
        """Route, then claim; a route without a claim gives its reservation back."""
        route = self.hooks.route(time.time() if now is None else now)
        if route.wait is not None:
            return route, None
        claim = None
        try:
            claim = self.store.claim(self.options.owner, lease=self.config.lease, now=now,
                                     item_id=self.options.item_id, job=self.options.job)  # fmt: skip
        finally:
            if claim is None:
                self.hooks.unclaimed(route)
        if claim is not None:
            self.hooks.claimed(claim, route)
        return route, claim

    def _attempt(self, claim: Claim, route: Route) -> Attempt:
        return Attempt(self, claim, threading.Event(), route)

    def _track(self, attempt: Attempt, thread: threading.Thread) -> None:
        """Make the attempt visible to heartbeats, ``stop`` and progress (under ``_done``)."""
        self.attempts[attempt.item.id] = attempt
        self.active[attempt.item.id] = (thread, attempt.cancel, attempt.claim)

    def _drive(self, attempt: Attempt) -> None:
        try:
            while attempt is not None:
                try:
                    outcome = attempt.execute()
                finally:
                    with self._done:
                        self.active.pop(attempt.item.id, None)
                        self.attempts.pop(attempt.item.id, None)
                        self._done.notify_all()
                self.outcomes.append(outcome)
                attempt = self._next_attempt()
        finally:
            with self._done:
                self.slots -= 1
                self._done.notify_all()

    def _next_attempt(self) -> Attempt | None:
        """In ``run()``: claim the next item on this thread; None when there is none now (the main loop decides)."""
        if not self._follow_on or self._stop.is_set():
            return None
        try:
            route, claim = self._claim()
        except OrchError:  # busy or unreachable for now: the main loop's next claim will say so
            return None
        if claim is None:
            return None
        attempt = self._attempt(claim, route)
        with self._done:
            if not self._stop.is_set():  # stop() cancels what is tracked, under _done: nothing slips past it
                threading.current_thread().name = f"orch-{claim.item.id}"
                self._track(attempt, threading.current_thread())
                return attempt
        try:  # the run is stopping: give the item back unstarted
            self.store.release(claim.item.id, self.options.owner, attempt=claim.attempt)
        except OrchError:
            pass
        self.hooks.ended(Outcome(claim.item.id, claim.attempt, states.CANCELED, "released", 0, attempt.manifest.path),
                         None, route)  # fmt: skip
        return None

    def run(self) -> list[Outcome]:
        """Run until nothing is runnable (or one item with ``once``); returns every outcome."""
        stopped = self.registry.stop_orphans(self.options.grace)
        for entry in stopped:
            self.report(f"stopped agent pid {entry.pid} of {entry.item_id} left by a runner that died")
        beat = threading.Thread(target=self._heartbeats, name="orch-heartbeat", daemon=True)
        beat.start()
        self.hooks.run_started()
        self._follow_on = not self.options.once
        try:
            self._loop()
        finally:
            self._follow_on = False
            self._stop.set()
            self.hooks.run_stopped()
        self.hooks.run_finished(self.outcomes)
        if self.commits % MAINTAIN_EVERY:
            maintain(self.root)
        return self.outcomes

    def committed(self) -> None:
        """An evidence commit was made; they skip git's per-commit auto maintenance, so check every so often."""
        with self._done:
            self.commits += 1
            due = not self.commits % MAINTAIN_EVERY
        if due:
            maintain(self.root)

    def _loop(self) -> None:
        started = [0]
        while not self._stop.is_set():
            try:
                if self._turn(started):
                    return
            except BusyError as error:  # the store is unreachable or locked for now (a failover, a long orch edit)
                if not self.options.forever and not self.slots:
                    raise  # nothing of ours is running: say so and end
                self.report(f"the queue is unavailable ({error}); trying again in {self.options.idle_poll:g}s")
                self._stop.wait(self.options.idle_poll)

    def _turn(self, started: list[int]) -> bool:
        """One turn of the loop; True when the run is over."""
        while self.slots < self.options.workers and not (self.options.once and started[0]):
            if self.tick() is None:
                break
            started[0] += 1
        if not self.slots:
            if self.options.once and started[0]:
                return True
            if self.route_wait is not None and self._pending_runnable():
                self._stop.wait(min(max(self.route_wait, 0.05), 5.0))  # every pool full or paused
                return False
            wait = self._retry_wait()
            if wait is None and self.options.forever:
                self._idle()
                return False
            if wait is None:
                return True
            self.report(f"waiting {wait:.0f}s for a retry backoff to pass")
            self._stop.wait(min(wait, 5.0))
            return False
        with self._done:
            self._done.wait(timeout=1.0)
        return False

    def _idle(self) -> None:
        """Nothing to do: wait for the store to say work arrived (PostgreSQL NOTIFY), else poll."""
        waiter = getattr(self.store, "wait_for_work", None)
        if waiter is not None:
            waiter(self.options.idle_poll)
        else:
            self._stop.wait(self.options.idle_poll)

    def _pending_runnable(self) -> bool:
        """Whether an item is waiting only for a pool (not for a dependency or a backoff)."""
        now = time.time()
        done = {item.id.lower() for item in self.store.items(Status.DONE)}
        return any(
            (not item.retry_not_before or item.retry_not_before <= now)
            and all(dep.lower() in done for dep in item.depends_on)
            and (not self.options.job or item.job == self.options.job)
            for item in self.store.items(Status.PENDING)
        )

    def _retry_wait(self) -> float | None:
        """Seconds until a PENDING item's backoff ends (only items that could then run), or None."""
        if not self.options.wait_for_retries:
            return None
        now = time.time()
        done = {item.id.lower() for item in self.store.items(Status.DONE)}
        waits = [
            item.retry_not_before - now
            for item in self.store.items(Status.PENDING)
            if item.retry_not_before and item.retry_not_before > now
            and all(dep.lower() in done for dep in item.depends_on)
            and (not self.options.item_id or item.id == self.options.item_id)
            and (not self.options.job or item.job == self.options.job)
        ]  # fmt: skip
        return max(0.05, min(waits)) if waits else None

    def stop(self, wait: float | None = None) -> None:
        """Ask the run to end: running attempts are cancelled and released (within ``wait`` seconds, if given)."""
        self._stop.set()
        with self._done:
            running = list(self.active.values())
        for _, cancel, _ in running:
            cancel.set()
        if wait is not None:
            deadline = time.monotonic() + wait
            for thread, _, _ in running:
                thread.join(max(0.0, deadline - time.monotonic()))

    def _heartbeats(self) -> None:
        interval = self.config.heartbeat or max(0.2, self.config.lease / 3)
        while not self._stop.wait(interval):
            for item_id, (_, cancel, claim) in list(self.active.items()):
                try:
                    self.store.heartbeat(item_id, self.options.owner, lease=self.config.lease,
                                         attempt=claim.attempt)  # fmt: skip
                except LeaseLostError:
                    cancel.set()
                except OrchError as error:
                    self.report(f"{item_id}: heartbeat failed: {error}")


class Attempt:
    """One attempt of one item: the worker/supervisor loop and its evidence."""

    def __init__(self, runner: Runner, claim: Claim, cancel: threading.Event, route: Route | None = None) -> None:
        self.runner, self.claim, self.cancel = runner, claim, cancel
        self.route = route or Route()
        self.started = time.monotonic()
        self.details = task_prompt(runner.root, claim.item)  # a work order task's full prompt
        self.phase = "starting"
        self.item: Item = claim.item
        self.options, self.config, self.store = runner.options, runner.config, runner.store
        self.owner = self.options.owner
        self.run_dir = _free_folder(runner.runtime / "runs" / self.item.id, claim.attempt)
        self.manifest = JobManifest(self.run_dir / "job_manifest.json", self.item.id, claim.attempt, self.owner)
        self.deadline = time.monotonic() + (self.options.job_timeout or self.config.job_timeout)
        self.worktree: Worktree | None = None
        self.steps = 0
        self.final: Item | None = None  # the row as the store call that ended the attempt returned it
        self.git_repo = None  # the worktree's GitPython repo, once it has one

    def say(self, message: str) -> None:
        self.runner.report(f"{self.item.id} {message}")

    def execute(self) -> Outcome:
        note = ""
        try:
            note = self._loop()
        except AgentCancelledError:
            note = self._cancelled()
        except AgentTimeoutError as error:
            note = self._end(states.FAILED, f"timeout:{error.seconds:g}s", str(error), retryable=False)
        except AgentError as error:
            note = self._end(states.FAILED, f"error:{_short(str(error))}", str(error), retryable=True)
        except Exception as error:  # a bug in orch itself: record it, free the item, keep the runner alive
            self.manifest.history.append({"traceback": traceback.format_exc()})
            note = self._end(states.FAILED, f"error:orch {type(error).__name__}", repr(error), retryable=True)
        finally:
            if self.worktree is not None and self.manifest.state in states.END_STATES:
                self.runner.worktrees.finish(self.worktree)
        outcome = Outcome(self.item.id, self.claim.attempt, self.manifest.state, note, self.steps,
                          _shown(self.manifest.path), self.worktree.branch if self.worktree else "",
                          time.monotonic() - self.started, self.manifest.usage,
                          self.manifest.steps[-1].get("commit", "") if self.manifest.steps else "")  # fmt: skip
        self.runner.hooks.ended(outcome, self.final or self._item_now(), self.route)
        return outcome

    def _item_now(self) -> Item | None:
        try:
            return self.store.get(self.item.id)
        except OrchError:
            return None

    def _loop(self) -> str:
        self.worktree = self.runner.worktrees.create(self.item.id, self.claim.attempt, self.runner.base)
        self.manifest.branch, self.manifest.worktree = self.worktree.branch, str(self.worktree.path)
        self.manifest.base = self.worktree.base
        self.manifest.note(states.RUNNING, f"claimed by {self.owner}")
        self.say(f"attempt {self.claim.attempt} started in {_shown(self.worktree.path)} on {self.worktree.branch}")
        max_steps = self.options.max_steps or self.config.max_steps
        feedback = ""
        for step in range(1, max_steps + 1):
            if step > 1:
                self._check_still_ours()  # the last supervisor's verdict may have been taken without asking
            self.steps = step
            verdict = self._step(step, feedback)
            if verdict.verdict == SUCCESS:
                return self._end(states.SUCCESS, "", verdict.reason)
            if verdict.verdict == INTERVENTION:
                return self._end(states.INTERVENTION_REQUIRED, f"intervention:{_short(verdict.reason)}",
                                 verdict.reason)  # fmt: skip
            feedback = verdict.feedback or verdict.reason
        why = f"max steps reached ({max_steps})"
        return self._end(states.INTERVENTION_REQUIRED, f"intervention:{why}", why)

    def _step(self, step: int, feedback: str) -> Verdict:
        worker_name = self.item.agent or self.route.agent or self.config.worker  # a task's own agent wins
        record: dict = {"step": step, "started": time.time()}
        try:
            worker_prompt = prompts.worker_prompt(self.item, step, feedback, self.details)
            worker = self._call(worker_name, "worker", step, worker_prompt)
            record["worker"] = {"agent": worker_name, **worker.as_dict()}
            if worker.intervention:
                verdict = Verdict(INTERVENTION, worker.intervention, "", "worker")
                record["verdict"] = verdict.as_dict()
                self._commit(step, record, verdict.verdict, verdict.reason)
                return verdict
            if worker.exit_code != 0:
                tail = _short(worker.output[-300:] or self._stderr_tail(step, "worker"), 160)
                raise AgentError(f"{worker_name} exited {worker.exit_code}: {tail}")
            diff = self._diff_stat()
            prompt = prompts.supervisor_prompt(self.item, step, worker.output, diff, self.details)
            supervisor = self._call(self.config.supervisor, "supervisor", step, prompt)
            record["supervisor"] = {"agent": self.config.supervisor, **supervisor.as_dict()}
            verdict = read_verdict(
                supervisor.output, supervisor.exit_code, self._verdict_file(step), supervisor.verdict,
                judge_by_exit_code=getattr(self.runner.agent(self.config.supervisor), "judged_by_exit_code", False),
            )  # fmt: skip
            if supervisor.intervention:
                verdict = Verdict(INTERVENTION, supervisor.intervention, "", "supervisor")
        except AgentError as error:
            if error.usage or error.exit_code is not None:  # the failed call still spent tokens: keep its account
                role = "supervisor" if "worker" in record else "worker"
                name = self.config.supervisor if role == "supervisor" else worker_name
                record[role] = {"agent": name, "exit_code": error.exit_code, "usage": error.usage, "error": str(error)}
            self._commit(step, record, type(error).__name__.replace("Agent", "").replace("Error", "").upper()
                         or "ERROR", str(error))  # fmt: skip
            raise
        record["verdict"] = verdict.as_dict()
        self._commit(step, record, verdict.verdict, verdict.reason)
        self.say(f"step {step}: {verdict.verdict}" + (f" - {_short(verdict.reason, 100)}" if verdict.reason else ""))
        self.runner.hooks.step(self.item, self.claim.attempt, step, verdict)
        return verdict

    def _folder(self, step: int) -> Path:
        return self.run_dir / f"step-{step:02d}"

    def _verdict_file(self, step: int) -> Path:
        return self._folder(step) / "verdict.json"

    def _call(self, agent_name: str, role: str, step: int, prompt: str) -> StepResult:
        agent = self.runner.agent(agent_name)
        self.phase = f"step {step} {role}"
        folder = self._folder(step)
        folder.mkdir(parents=True, exist_ok=True)
        prompt_file = folder / f"{role}.prompt.md"
        prompt_file.write_text(prompt, encoding="utf-8")
        left = self.deadline - time.monotonic()
        spec_timeout = self.config.agents[agent_name].timeout
        if left <= 0:
            raise AgentTimeoutError("the job ran out of time", self._job_timeout())
        request = StepRequest(
            self.item.id, self.claim.attempt, step, role, prompt, self.worktree.path, min(spec_timeout, left),
            prompt_file, folder / f"{role}.log", self._verdict_file(step), self.cancel, job_left_s=left,
        )  # fmt: skip
        result = None
        try:
            # `orch cancel` stops an agent process itself; the row is watched too, for the times no process
            # runs: an HTTP request, or an agent CLI waiting out a rate limit between its tries
            with cancel_when(self._taken, self.cancel):
                result = agent.step(request)
        except AgentTimeoutError as error:
            if left < spec_timeout or error.whole_job:
                seconds = self._job_timeout()
                why = f"{error} (--job-timeout {seconds:g}s)" if error.whole_job else ""
                raise AgentTimeoutError(why or f"the job ran past --job-timeout {seconds:g}s", seconds,
                                        whole_job=True) from error  # fmt: skip
            raise
        finally:
            # Before the supervisor runs, ask the store whether the item is still ours. After a supervisor
            # that exited cleanly the store call that ends the attempt is fenced anyway (a cancelled item
            # ends CANCELED there), and a next step asks first; one that died may have been a cancel.
            self._check_still_ours(ask_store=role == "worker" or result is None or result.exit_code != 0)
        return result

    def _stderr_tail(self, step: int, role: str) -> str:
        path = self._folder(step) / f"{role}.stderr.log"
        return path.read_text(errors="replace")[-300:] if path.exists() else ""

    def _job_timeout(self) -> float:
        return self.options.job_timeout or self.config.job_timeout

    def _check_still_ours(self, ask_store: bool = True) -> None:
        """Raise ``AgentCancelledError`` if an operator or the reaper took the item away."""
        if self.cancel.is_set():
            raise AgentCancelledError("cancelled")
        taken = self._taken() if ask_store else None
        if taken is not None:
            self.cancel.set()
            raise AgentCancelledError(f"the item is {taken.status.value} now")

    def _taken(self) -> Item | None:
        """The item as the store has it, if it is no longer this attempt's (cancelled, reaped); else None."""
        try:
            item = self.store.get(self.item.id)
        except OrchError:  # the store cannot say now: the heartbeat's fence still holds
            return None
        return item if item.status is not Status.IN_PROGRESS or item.owner != self.owner else None

    def _diff_stat(self) -> str:
        return stage_all(self.worktree.path)

    def _commit(self, step: int, record: dict, word: str, reason: str) -> None:
        if self.worktree is None:
            return
        evidence = (
            self.worktree.path / EVIDENCE_DIR / self.item.id / f"attempt-{self.claim.attempt}" / f"step-{step:02d}"
        )
        folder = self._folder(step)
        for name in ("worker.prompt.md", "supervisor.prompt.md", "verdict.json"):
            if (folder / name).exists():
                copy_file(folder / name, evidence / name)
        for role in ("worker", "supervisor"):
            for log, name in ((f"{role}.log", "transcript"), (f"{role}.stderr.log", "stderr")):
                if (folder / log).exists() and (name == "transcript" or (folder / log).stat().st_size):
                    copy_file(folder / log, evidence / f"{role}.{name}.txt", TRANSCRIPT_CAP)
        record["ended"] = time.time()
        write_json(evidence / "step.json", record)
        trailers = [f"Orch-Item: {self.item.id}", f"Orch-Attempt: {self.claim.attempt}", f"Orch-Step: {step}",
                    f"Orch-Verdict: {word}"]  # fmt: skip
        for role in ("worker", "supervisor"):
            digest = record.get(role, {}).get("log_sha256")
            if digest:
                trailers.append(f"Orch-{role.title()}-Log-Sha256: {digest}")
        body = _short(reason, 200)
        message = f"{self.item.id} step {step}: {word}\n\n" + (f"{body}\n\n" if body else "") + "\n".join(trailers)
        if self.git_repo is None:
            from git import Repo

            self.git_repo = Repo(self.worktree.path)
        record["commit"] = commit_all(self.worktree.path, message, self.runner.identity, self.git_repo)
        self.runner.committed()
        self.manifest.add_step(record)

    def _end(self, state: str, note: str, message: str, retryable: bool = True) -> str:
        """Move the row for this outcome and record it; returns the note written."""
        try:
            return self._ending(state, note, message, retryable)
        except BusyError as error:  # the queue stayed locked: the lease runs out and another claim retries it
            self.manifest.note(state, f"{message}; the queue stayed busy ({error}), so the row was left to its lease")
            self.say(f"{state}, but the queue stayed busy: left to its lease")
            return "busy"

    def _ending(self, state: str, note: str, message: str, retryable: bool) -> str:
        item_id, owner, attempt = self.item.id, self.owner, self.claim.attempt
        try:
            if state == states.SUCCESS:
                self.final = self._patiently(lambda: self.store.complete(item_id, owner, attempt=attempt))
                note = f"done:{attempt}"
            elif state == states.INTERVENTION_REQUIRED:
                self.final = self._patiently(lambda: self.store.block(item_id, owner, note=note, attempt=attempt))
            else:
                after = self.final = self._patiently(
                    lambda: self.store.fail(item_id, owner, note=note, attempt=attempt, retryable=retryable)
                )
                if after.status is Status.PENDING:
                    message += f" (retry {after.attempts + 1} after the backoff)"
                elif note.startswith("timeout:"):
                    message += (f"; raise --job-timeout or agents.<name>.timeout, then "
                                f"`orch retry --id {item_id}`")  # fmt: skip
        except LeaseLostError:
            return self._cancelled()
        self.manifest.note(state, message)
        told = f": {message}" if note and note.startswith("timeout:") else ""  # what to do about it, on screen too
        self.say(f"{state} ({note or message}) after {self.steps} step{'s' * (self.steps != 1)}{told}")
        return note

    def _patiently(self, call: Callable[[], Item]) -> Item:
        """``call``, tried again while the store is busy (a queue held by a long ``orch edit``, a failover),
        for as long as a lease lasts; the heartbeats keep the item ours meanwhile."""
        deadline = time.monotonic() + self.runner.config.lease
        while True:
            try:
                return call()
            except BusyError as error:
                if time.monotonic() >= deadline or self.runner._stop.is_set():
                    raise
                self.say(f"the queue is busy ({error}); trying again for up to {self.runner.config.lease:g}s")
                self.runner._stop.wait(min(1.0, max(0.0, deadline - time.monotonic())))

    def _cancelled(self) -> str:
        if self.runner._stop.is_set():  # the runner is stopping (Ctrl-C): give the item back
            try:
                self.final = self.store.release(self.item.id, self.owner, attempt=self.claim.attempt)
                self.manifest.note(states.CANCELED, "the runner stopped; the item was released")
                self.say("released: the runner stopped")
                return "released"
            except OrchError:
                pass
        self.manifest.note(states.CANCELED, "the item was cancelled or its lease was lost")
        self.say("CANCELED")
        return "cancelled"


def _free_folder(parent: Path, attempt: int) -> Path:
    """``<attempt>``, or ``<attempt>.2``... when a reset queue repeats an attempt number."""
    for suffix in ("", *(f".{k}" for k in range(2, 100))):
        folder = parent / f"{attempt}{suffix}"
        if not folder.exists():
            return folder
    return parent / f"{attempt}.{time.time_ns()}"


def _shown(path: Path) -> Path:
    """A path relative to the current folder when it is inside it, for messages."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _short(text: str, limit: int = 120) -> str:
    """One line, at most ``limit`` characters: fit for a note or a commit trailer."""
    line = " ".join(str(text).split()).replace(NOTE_SEPARATOR, ", ")  # one note stays one note
    return line if len(line) <= limit else line[: limit - 1] + "…"


__all__ = ["CONTINUE", "Outcome", "RunOptions", "Runner"]
