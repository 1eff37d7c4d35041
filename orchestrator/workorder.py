"""Work orders (seed 004): job packages that separate intent from execution.

``plan`` writes ``jobs/<job_id>/work_order.yaml`` and ``manifest.jsonl``;
``dispatch`` adds one queue row per task (``job`` column set; twice adds
nothing; ``replay`` starts a fresh run); the runner, as conductor, routes each
task to a pool and records every movement in ``execution.log`` and each
finished task in ``results.jsonl``. The work order's counters are recomputed
from the queue whenever they change, so they always agree with it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import yaml

from orchestrator import audit, model
from orchestrator.errors import BadInputError, NoWorkOrderError
from orchestrator.locks import exclusive
from orchestrator.model import Item, Status
from orchestrator.store.base import Store

JOBS_DIR = "jobs"
WORK_ORDER, MANIFEST, RESULTS, EXEC_LOG = "work_order.yaml", "manifest.jsonl", "results.jsonl", "execution.log"
STRATEGY_NAMES = ("hybrid_supervisor", "force_metal", "force_cloud", "hybrid", "force_local")
# libyaml reads the same data about ten times faster; writes keep the pure dumper, whose bytes the
# work orders already on disk were written with (libyaml escapes some characters differently).
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def local_now(now: float | None = None) -> str:
    """Work orders use the seed's local ``2025-12-11T15:30:00`` form."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() if now is None else now))


def slug(name: str) -> str:
    """A name as an id part: letters, digits and ``_``, at most 32 characters."""
    text = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
    return (text or "job")[:32].strip("_") or "job"


def new_job_id(name: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(time.time() if now is None else now))
    return model.check_id(f"{slug(name)}_{stamp}")


# --- tasks ------------------------------------------------------------------------


def load_tasks(path: Path) -> list[dict]:
    """Tasks from a JSONL or YAML file; each needs a ``prompt``. Errors name the task."""
    text = Path(path).read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text) or []
        tasks = data.get("tasks", []) if isinstance(data, dict) else data
        where = [f"{path}: task {k + 1}" for k in range(len(tasks) if isinstance(tasks, list) else 0)]
    else:
        tasks, where = [], []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    tasks.append(json.loads(line))
                except ValueError as error:
                    raise BadInputError(f"{path}:{number}: not JSON ({error.msg})") from None
                where.append(f"{path}:{number}")
    if not isinstance(tasks, list) or not tasks:
        raise BadInputError(f"{path}: no tasks (a JSONL file, or YAML: a list or {{tasks: [...]}})")
    return [_checked_task(task, place, k) for k, (task, place) in enumerate(zip(tasks, where, strict=True), 1)]


def _checked_task(task: object, where: str, number: int) -> dict:
    if not isinstance(task, dict) or not str(task.get("prompt", "")).strip():
        raise BadInputError(f"{where}: each task needs a non-empty 'prompt'")
    task = {**task, "id": str(task.get("id") or f"t{number:03d}")}
    model.check_id(task["id"])
    return task


def demo_tasks(count: int) -> list[dict]:
    """``--count N``: N small, self-contained tasks."""
    return [{"id": f"t{k:03d}", "title": f"Demo task {k} of {count}", "prompt": f"Write notes/task-{k}.md "
             f"saying which task this is ({k} of {count})."} for k in range(1, count + 1)]  # fmt: skip


# --- the package --------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """A job package's folder and files."""

    folder: Path

    @classmethod
    def of(cls, root: Path, job_id: str) -> Package:
        return cls(Path(root) / JOBS_DIR / model.check_id(job_id))

    @classmethod
    def from_order(cls, order_path: Path) -> Package:
        path = Path(order_path)
        if path.is_dir():
            path = path / WORK_ORDER
        if not path.is_file():
            raise BadInputError(f"{path}: no such work order (orch plan makes one)")
        return cls(path.parent)

    @property
    def job_id(self) -> str:
        return self.folder.name

    @property
    def order(self) -> Path:
        return self.folder / WORK_ORDER

    @property
    def manifest(self) -> Path:
        return self.folder / MANIFEST

    @property
    def results(self) -> Path:
        return self.folder / RESULTS

    @property
    def log(self) -> Path:
        return self.folder / EXEC_LOG

    def read_order(self) -> dict:
        try:
            return yaml.load(self.order.read_text(encoding="utf-8"), Loader=YAML_LOADER) or {}
        except FileNotFoundError:
            raise NoWorkOrderError(self.job_id, self.order) from None

    def write_order(self, order: dict) -> None:
        temp = self.order.with_name(f".{WORK_ORDER}.{os.getpid()}.tmp")
        temp.write_text(yaml.safe_dump(order, sort_keys=False, allow_unicode=True), encoding="utf-8")
        os.replace(temp, self.order)

    def tasks(self) -> list[dict]:
        return [json.loads(line) for line in self.manifest.read_text(encoding="utf-8").splitlines() if line.strip()]

    def prompts(self) -> dict[str, tuple[int, str]]:
        """Each task's item id in run 1 -> (its place in the manifest, its prompt); parsed once per content."""
        try:
            return _prompts(self.job_id, self.manifest.read_bytes())
        except FileNotFoundError:
            return {}

    def locked(self):
        """Serialise updates of the work order and results between runners."""
        return exclusive(self.folder / ".lock")

    def event(self, actor: str, event: str, message: str) -> None:
        audit.append_event(self.log, actor, event, message)


def plan(root: Path, name: str, tasks: list[dict], strategy: str, now: float | None = None) -> Package:
    """Write a new job package; returns it."""
    if strategy not in STRATEGY_NAMES:
        raise BadInputError(f"--strategy {strategy!r}: use one of {', '.join(STRATEGY_NAMES)}")
    job_id = new_job_id(name, now)
    package = Package.of(root, job_id)
    if package.folder.exists():
        raise BadInputError(f"{package.folder}: exists already; wait a second or choose another --name")
    package.folder.mkdir(parents=True)
    package.manifest.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks), encoding="utf-8")
    package.write_order({
        "job_id": job_id, "name": name, "created": local_now(now),
        "status": "pending", "manifest": {"path": MANIFEST, "count": len(tasks)},
        "routing_strategy": strategy, "backlog_key": f"job:{job_id}:backlog",
        "output": {"results_path": RESULTS, "logs_path": EXEC_LOG},
        "execution": {"started_at": None, "completed_at": None, "tasks_dispatched": 0, "tasks_completed": 0,
                      "tasks_failed": 0},
    })  # fmt: skip
    return package


def item_id(job_id: str, task_id: str, run: int) -> str:
    suffix = f".r{run}" if run > 1 else ""
    return model.check_id(f"{job_id}-{task_id}{suffix}")


def current_run(items: list[Item], job_id: str) -> int:
    """Which run of a work order the queue holds: 1, or the highest ``.rN`` among its rows (0: none yet)."""
    runs = [_run_of(item.id, job_id) for item in items if item.job == job_id]
    return max(runs, default=0)


def _run_of(item_id: str, job_id: str) -> int:
    match = _run_pattern(job_id).fullmatch(item_id)
    return int(match.group(1) or 1) if match else 1


@functools.lru_cache(maxsize=64)
def _run_pattern(job_id: str) -> re.Pattern:
    return re.compile(re.escape(job_id) + r"-.+?(?:\.r(\d+))?")


def dispatch(store: Store, package: Package, *, replay: bool = False, actor: str = "orch@dispatch") -> tuple[int, int]:
    """Add a queue row per task; (added, already there). ``replay`` starts run n+1 with new rows."""
    with package.locked():
        order = package.read_order()
        items = store.items()
        run = current_run(items, package.job_id)
        run = run + 1 if replay or run == 0 else run
        known = {item.id.lower() for item in items}
        rows = [_row(package.job_id, task, run) for task in package.tasks()]
        new = [row for row in rows if row.id.lower() not in known]
        if new:
            store.add(new, actor=actor)
            order["status"] = "pending"
            order["execution"].update(started_at=None, completed_at=None)  # a fresh run
        package.write_order(order)
    refresh_counters(store, package)
    return len(new), len(rows) - len(new)


def _row(job_id: str, task: dict, run: int) -> Item:
    title = str(task.get("title") or task["prompt"]).splitlines()[0][:100]
    depends = tuple(item_id(job_id, dep, run) for dep in task.get("depends_on", []) or [])
    return Item(item_id(job_id, task["id"], run), title=title, job=job_id, agent=str(task.get("agent", "")),
                depends_on=depends)  # fmt: skip


def task_prompt(root: Path, item: Item) -> str | None:
    """The full prompt of the task behind a queue row, from its job's manifest."""
    if not item.job:
        return None
    prompts = Package.of(root, item.job).prompts()
    replayed = re.fullmatch(r"(.+)\.r\d+", item.id)  # a replay's row: its task is the id without .rN
    # As the manifest says it: the first task whose id is this row's, either way.
    found = [prompts[key] for key in (item.id, replayed and replayed.group(1)) if key in prompts]
    return min(found)[1] if found else None


@functools.lru_cache(maxsize=16)
def _prompts(job_id: str, manifest: bytes) -> dict[str, tuple[int, str]]:
    """A manifest's prompts by item id (each attempt asks; the JSON is parsed once, not once an attempt)."""
    found: dict[str, tuple[int, str]] = {}
    lines = manifest.decode("utf-8").splitlines()
    for place, task in enumerate(json.loads(line) for line in lines if line.strip()):
        found.setdefault(f"{job_id}-{task['id']}", (place, str(task["prompt"])))
    return found


# --- counters, results, status -------------------------------------------------------


def job_items(store: Store, job_id: str) -> list[Item]:
    """The rows of the work order's current run (a replay's rows, once it has them)."""
    items = [item for item in store.items() if item.job == job_id]
    run = max((_run_of(item.id, job_id) for item in items), default=0)
    return [item for item in items if _run_of(item.id, job_id) == run]


def refresh_counters(store: Store, package: Package, *, write: bool = True) -> dict:
    """Recompute the execution counters from the queue (and write them if they changed); returns the order."""
    items = job_items(store, package.job_id)
    with package.locked() if write else nullcontext():
        order = package.read_order()
        before = repr(order)
        execution = order.setdefault("execution", {})
        execution["tasks_dispatched"] = len(items)
        execution["tasks_completed"] = sum(item.status is Status.DONE for item in items)
        execution["tasks_failed"] = sum(item.status is Status.FAILED for item in items)
        finished = items and all(item.status in (Status.DONE, Status.FAILED, Status.BLOCKED) for item in items)
        if finished:
            order["status"] = "completed" if all(item.status is Status.DONE for item in items) else "failed"
            execution["completed_at"] = execution.get("completed_at") or local_now()
        elif any(item.status is not Status.PENDING for item in items) and order.get("status") != "running":
            order["status"] = "running"
        if write and repr(order) != before:
            package.write_order(order)
    return order


def append_result(package: Package, result: dict) -> None:
    """One line in results.jsonl for a finished task."""
    with package.locked(), package.results.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(result, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class JobStatus:
    """What ``orch job status`` shows."""

    job_id: str
    name: str
    status: str
    strategy: str
    dispatched: int
    backlog: int
    completed: int
    failed: int
    files: dict

    @property
    def progress(self) -> float:
        return 100.0 * self.completed / self.dispatched if self.dispatched else 0.0

    def as_dict(self) -> dict:
        return {**self.__dict__, "progress": round(self.progress, 1)}


def status(store: Store, package: Package) -> JobStatus:
    """The work order's progress, from the queue; reading it writes nothing."""
    order = refresh_counters(store, package, write=False)
    items = job_items(store, package.job_id)
    execution = order.get("execution", {})
    return JobStatus(
        package.job_id, str(order.get("name", "")), str(order.get("status", "pending")).upper(),
        str(order.get("routing_strategy", "")), execution.get("tasks_dispatched", 0),
        sum(item.status is Status.PENDING for item in items), execution.get("tasks_completed", 0),
        execution.get("tasks_failed", 0),
        {"manifest": str(package.manifest), "results": str(package.results), "log": str(package.log)},
    )  # fmt: skip
