"""The ``orch`` command line: parse options, call the library, render. Nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import click

from orchestrator import operations, render
from orchestrator.errors import MissingPathError, OrchError

QUEUE_NAME = "QUEUE.md"


class CliError(click.ClickException):
    """Shows an error the way the contract says: ``error: <what and where>`` on stderr, and its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)

    @classmethod
    def of(cls, error: Exception) -> CliError:
        if isinstance(error, OrchError):
            return cls(str(error), error.exit_code)
        if isinstance(error, click.UsageError):  # bad input: 2, with where to read more
            where = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
            return cls(error.format_message().rstrip(".") + where, 2)
        # OSError: the disk said no (permissions, a full disk, a folder where a file should be)
        what = f"{error.filename}: " if getattr(error, "filename", None) else ""
        return cls(f"{what}{getattr(error, 'strerror', None) or error}", 1)


class OrchGroup(click.Group):
    """Turns library, usage and disk errors into ``error: ...`` lines in one place, not in every command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            raise CliError.of(error) from error

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (OrchError, click.UsageError) as error:
            raise CliError.of(error) from error
        except OSError as error:
            if isinstance(error, BrokenPipeError):
                raise  # click ends quietly when the reader of our output went away
            raise CliError.of(error) from error


def find_queue(start: Path) -> Path:
    """``QUEUE.md`` in ``start`` or a parent folder, up to the repository root."""
    folder = start.resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / QUEUE_NAME).is_file():
            return candidate / QUEUE_NAME
        if (candidate / ".git").exists():
            break
    raise MissingPathError(
        f"no {QUEUE_NAME} in {folder} or above it up to the repository root; pass --queue PATH or run orch init"
    )


def _repo_root(start: Path) -> Path | None:
    folder = start.resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def _shown(path: Path) -> Path:
    """A discovered path as short as possible for messages."""
    try:
        return path.relative_to(Path.cwd().resolve())
    except ValueError:
        return path


@dataclass
class App:
    """What every command needs, opened lazily so ``--help`` touches no files."""

    queue_option: str | None
    db: str | None

    @cached_property
    def queue(self) -> Path:
        if self.queue_option:
            return Path(self.queue_option)
        return _shown(find_queue(Path.cwd()))

    @cached_property
    def store(self):
        from orchestrator.store import open_store

        if self.db:
            return open_store(queue=Path(QUEUE_NAME), db=self.db, policy=self.config.retry, lease=self.config.lease)
        return open_store(queue=self.queue, policy=self.config.retry, lease=self.config.lease)

    @cached_property
    def reader(self):
        """The store for commands that only read: no orch.yaml needed, and a missing database is an
        error rather than a new empty one."""
        from orchestrator.store import open_store

        if self.db:
            return open_store(queue=Path(QUEUE_NAME), db=self.db, create=False)
        return open_store(queue=self.queue)

    @cached_property
    def root(self) -> Path:
        """The folder of orch.yaml and .orch/: the queue's folder, or with --db the repository root."""
        if not self.db:
            return self.queue.parent
        return _repo_root(Path.cwd()) or Path.cwd()

    @cached_property
    def config(self):
        from orchestrator.config import load_config

        return load_config(self.root)


pass_app = click.make_pass_decorator(App)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
id_option = click.option("--id", "item_id", required=True, metavar="ID", help="The item's id.")


@click.group(cls=OrchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--queue", "queue", envvar="ORCH_QUEUE", metavar="PATH",
    help="Markdown queue file. Default: QUEUE.md in this folder or above, up to the repo root.",
)  # fmt: skip
@click.option("--db", "db", envvar="ORCH_DB", metavar="PATH_OR_URL",
              help="Use a database queue instead: an SQLite file, or a postgresql:// URL.")  # fmt: skip
@click.version_option(package_name="orch", message="orch %(version)s")
@click.pass_context
def cli(ctx: click.Context, queue: str | None, db: str | None) -> None:
    """orch: a git-friendly job orchestrator for coding agents.

    The queue is the markdown table in QUEUE.md (or an SQLite file with --db).
    Exit codes: 0 done, 1 refused by a rule, 2 bad input.
    """
    ctx.obj = App(queue, db)


@cli.command()
@click.option("--summary", "summary_only", is_flag=True, help="Only the summary line.")
@click.option("--watch", is_flag=True, help="Keep watching; print again only when it changes (Ctrl-C stops).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True, metavar="SECONDS",
              help="How often --watch looks.")  # fmt: skip
@json_option
@pass_app
def status(app: App, summary_only: bool, watch: bool, interval: float, as_json: bool) -> None:
    """Counts by status, then the oldest IN_PROGRESS items (up to 5), stale ones marked. Read-only."""

    def snapshot() -> str:
        summary = operations.summarize(app.reader, runtime=app.root / ".orch")
        if as_json:
            return render.status_json(summary)
        return render.summary_line(summary) if summary_only else render.status_text(summary)

    if not watch:
        click.echo(snapshot())
        return
    from orchestrator.watch import watch as watch_loop

    watch_loop(snapshot, interval, click.echo)


@cli.command()
@json_option
@pass_app
def workers(app: App, as_json: bool) -> None:
    """IN_PROGRESS items grouped by owner, oldest start first; stale ones listed. Read-only."""
    loads = operations.worker_loads(app.reader, runtime=app.root / ".orch")
    click.echo(render.workers_json(loads) if as_json else render.workers_text(loads))


@cli.command()
@id_option
@click.option("--to", "to", required=True, metavar="AGENT", help="The agent (from orch.yaml) for the next attempt.")
@json_option
@pass_app
def reassign(app: App, item_id: str, to: str, as_json: bool) -> None:
    """Give a BLOCKED or FAILED item to another agent: PENDING again, noted reassign:<agent>."""
    item = operations.reassign(app.store, item_id, to, list(app.config.agents))
    click.echo(render.item_json(item) if as_json else f"{render.transition(item)} (agent {item.agent})")


@cli.command()
@click.argument("what", required=False, type=click.Choice(["all"]), metavar="[all]")
@click.option("--id", "item_id", metavar="ID", help="The item to cancel.")
@click.option("--job", metavar="JOB", help="Cancel every PENDING or IN_PROGRESS item of this work order.")
@click.option("--grace", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds a running agent gets after SIGTERM before SIGKILL.")  # fmt: skip
@json_option
@pass_app
def cancel(app: App, what: str | None, item_id: str | None, job: str | None, grace: float, as_json: bool) -> None:
    """Cancel an item (--id), every running item (all) or a work order (--job).

    PENDING or IN_PROGRESS items become BLOCKED, noted cancelled_by_operator;
    their running agents are stopped (SIGTERM, then SIGKILL after --grace).
    """
    chosen = [name for name, on in (("--id", item_id), ("all", what), ("--job", job)) if on]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --id ID, all, or --job JOB")
    items = operations.cancel_many(app.store, app.root / ".orch", item_id=item_id, everything=bool(what),
                                   job=job, grace=grace)  # fmt: skip
    if as_json:
        click.echo(render.as_json([item.as_dict() for item in items]) if not item_id else render.item_json(items[0]))
    else:
        click.echo("\n".join(render.transition(item) for item in items) or "nothing to cancel")


@cli.command()
@id_option
@click.option("--notes", required=True, help="Why the item is replanned; appended as replan:<notes>.")
@json_option
@pass_app
def replan(app: App, item_id: str, notes: str, as_json: bool) -> None:
    """Record a replan: IN_PROGRESS becomes BLOCKED, anything else PENDING."""
    item = operations.replan(app.store, item_id, notes)
    click.echo(render.item_json(item) if as_json else render.transition(item))


@cli.command()
@id_option
@click.option("--run", "run_now", is_flag=True, help="Then run the item at once (reset + run).")
@json_option
@pass_app
def retry(app: App, item_id: str, run_now: bool, as_json: bool) -> None:
    """Return a FAILED or BLOCKED item to PENDING.

    With --db, or a queue with attempts, max_attempts and retry_not_before
    columns, the retry policy decides: FAILED or timed-out IN_PROGRESS only,
    attempts left, after a backoff.
    """
    item = operations.retry(app.store, item_id)
    click.echo(render.item_json(item) if as_json else render.transition(item))
    if run_now:
        _run(app, RunSettings(item_id=item_id, once=True, ignore_backoff=True))


@cli.command()
@click.option("--title", required=True, help="What the item is about.")
@click.option("--id", "item_id", metavar="ID", help="Choose the id (default: a random one with the id_prefix).")
@click.option("--set", "sets", multiple=True, metavar="COLUMN=VALUE", help="Fill another column; repeatable.")
@json_option
@pass_app
def add(app: App, title: str, item_id: str | None, sets: tuple[str, ...], as_json: bool) -> None:
    """Append a PENDING item to the queue and print its id."""
    values = operations.parse_sets(sets)
    item = operations.add(app.store, title=title, item_id=item_id, values=values, prefix=app.config.id_prefix)
    click.echo(render.item_json(item) if as_json else item.id)


@cli.command()
@id_option
@json_option
@pass_app
def show(app: App, item_id: str, as_json: bool) -> None:
    """One item: its row, its notes and its history so far. Read-only."""
    item, events = operations.show(app.reader, item_id)
    from orchestrator.manifest import item_usage

    usage = item_usage(app.root / ".orch", item.id)
    click.echo(render.item_json(item, events, usage) if as_json else render.item_text(item, events, usage))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@json_option
@pass_app
def validate(app: App, paths: tuple[Path, ...], as_json: bool) -> None:
    """Check QUEUE.md (or PATHS) against the house rules; every problem with its line.

    Exit 0 when valid, 2 otherwise: use it as a pre-commit hook or a CI step.
    """
    reports = []
    for path in paths or (app.queue,):
        problems, count = operations.validate_file(path, str(path))
        reports.append(render.problems_json(str(path), problems, count))
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
        if not problems and not as_json:
            click.echo(f"{path}: ok ({count} items)")
    if as_json:
        click.echo(render.as_json(reports if paths else reports[0]))
    if any(not report["ok"] for report in reports):
        raise SystemExit(2)


# --- the pull API for agents outside the runner ---------------------------------

owner_option = click.option("--owner", required=True, metavar="NAME", help="Who holds the item (your worker's name).")
attempt_option = click.option(
    "--attempt",
    type=click.IntRange(min=1),
    metavar="N",
    help="The attempt you hold (from claim); fences stale workers.",
)


@cli.command()
@owner_option
@click.option("--lease", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="How long the claim lasts without a heartbeat (default: orch.yaml lease, 300).")  # fmt: skip
@click.option("--id", "item_id", metavar="ID", help="Claim this item only.")
@click.option("--job", metavar="JOB", help="Claim only items of this work order.")
@json_option
@pass_app
def claim(app: App, owner: str, lease: float | None, item_id: str | None, job: str | None, as_json: bool) -> None:
    """Take the next runnable item and print its id (exit 1 when nothing is runnable)."""
    taken = operations.claim(app.store, owner, lease=lease or app.config.lease, item_id=item_id, job=job)
    click.echo(render.as_json(taken.as_dict()) if as_json else taken.item.id)


@cli.command()
@id_option
@owner_option
@attempt_option
@click.option("--lease", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Extend the lease to SECONDS from now (default: orch.yaml lease).")  # fmt: skip
@json_option
@pass_app
def heartbeat(app: App, item_id: str, owner: str, attempt: int | None, lease: float | None, as_json: bool) -> None:
    """Keep a claim alive; refused (exit 1) if the item is no longer yours."""
    until = operations.heartbeat(app.store, item_id, owner, lease=lease or app.config.lease, attempt=attempt)
    click.echo(
        render.as_json({"id": item_id, "lease_until": until}) if as_json else f"{item_id} lease_until={until:.0f}"
    )


@cli.command()
@id_option
@owner_option
@attempt_option
@click.option("--notes", default="", help="Appended after done:<attempt>.")
@json_option
@pass_app
def complete(app: App, item_id: str, owner: str, attempt: int | None, notes: str, as_json: bool) -> None:
    """Finish a claimed item: it becomes DONE (refused if the claim was lost)."""
    item = operations.complete(app.store, item_id, owner, attempt=attempt, notes=notes)
    click.echo(render.item_json(item) if as_json else render.transition(item))


@cli.command()
@id_option
@owner_option
@attempt_option
@click.option("--reason", required=True, help="What went wrong; noted as error:<reason>.")
@json_option
@pass_app
def fail(app: App, item_id: str, owner: str, attempt: int | None, reason: str, as_json: bool) -> None:
    """Report a claimed item failed: retried after a backoff while attempts are left, else FAILED."""
    item = operations.fail(app.store, item_id, owner, reason=reason, attempt=attempt)
    click.echo(render.item_json(item) if as_json else render.transition(item))


# --- moving a queue between backends ----------------------------------------------


@cli.command(name="export")
@click.option("--to", "target", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Markdown file to write the queue table into (created if missing).")  # fmt: skip
@json_option
@pass_app
def export_queue(app: App, target: Path, as_json: bool) -> None:
    """Write the --db queue as a markdown table, so it can be reviewed in git."""
    added, replaced = operations.export_queue(app.reader, target)
    report = {"to": str(target), "added": added, "replaced": replaced}
    click.echo(render.as_json(report) if as_json else f"exported to {target}: {added} added, {replaced} updated")


@cli.command(name="import")
@click.option("--from", "source", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Markdown queue to read.")  # fmt: skip
@json_option
@pass_app
def import_queue(app: App, source: Path, as_json: bool) -> None:
    """Load a markdown queue into the --db store (new ids added, known ids replaced)."""
    added, replaced = operations.import_queue(app.store, source)
    report = {"from": str(source), "added": added, "replaced": replaced}
    click.echo(render.as_json(report) if as_json else f"imported from {source}: {added} added, {replaced} updated")


# --- running jobs -------------------------------------------------------------------


@dataclass
class RunSettings:
    """``orch run``'s options, as given."""

    item_id: str | None = None
    job: str | None = None
    workers: int = 1
    job_timeout: float | None = None
    max_steps: int | None = None
    once: bool = False
    ignore_backoff: bool = False
    forever: bool = False


def _run(app: App, settings: RunSettings) -> None:
    from orchestrator.runner import Runner, RunOptions

    options = RunOptions(
        workers=settings.workers, item_id=settings.item_id, job=settings.job, once=settings.once,
        job_timeout=settings.job_timeout, max_steps=settings.max_steps, forever=settings.forever,
    )  # fmt: skip
    if settings.ignore_backoff:
        operations.clear_backoff(app.store, settings.item_id)
    hooks = None
    if settings.job:
        from orchestrator.conductor import Conductor
        from orchestrator.workorder import Package

        package = Package.of(app.root, settings.job)
        package.read_order()  # a clear error when the job has no package
        hooks = Conductor(app.store, app.config, package)
    stream = click.get_text_stream("stdout")
    live = None
    runner = Runner(app.store, app.config, app.root, options, report=lambda line: click.echo(line), hooks=hooks)
    if stream.isatty():
        from orchestrator.progress import LiveProgress, attempt_rows

        total = len([i for i in app.store.items() if i.job == settings.job]) if settings.job else None
        live = LiveProgress(stream, attempt_rows(runner, total))
        runner.report = live.line
        live.start()
    if hooks is not None:
        hooks.attach(runner)
    try:
        outcomes = runner.run()
    except KeyboardInterrupt:
        runner.stop(wait=options.grace + 30)  # each attempt stops its agents (grace) and releases its item
        click.echo("interrupted: running attempts were cancelled and their items released", err=True)
        raise SystemExit(130) from None
    finally:
        if live is not None:
            live.stop()
    click.echo(render.run_summary(outcomes, app.store))


@cli.command()
@click.option("--id", "item_id", metavar="ID", help="Run only this item.")
@click.option("--job", metavar="JOB", help="Run only the items of this work order.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Attempts at once.")
@click.option("--job-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop an attempt after this long (default: orch.yaml job_timeout, 3600).")  # fmt: skip
@click.option("--max-steps", type=click.IntRange(min=1), metavar="N",
              help="Worker/supervisor rounds before asking a human (default: orch.yaml max_steps, 6).")  # fmt: skip
@click.option("--once", is_flag=True, help="Run one item, then stop.")
@click.option("--forever", is_flag=True, help="Keep waiting for new work (PostgreSQL wakes it at once; else it polls).")
@pass_app
def run(app: App, item_id: str | None, job: str | None, workers: int, job_timeout: float | None,
        max_steps: int | None, once: bool, forever: bool) -> None:  # fmt: skip
    """Claim runnable items and run each in its own git worktree until none is left.

    Each attempt runs on branch orch/<id>/<attempt> in .orch/worktrees/<id>/<attempt>:
    a worker step, then a supervisor step, until the supervisor says SUCCESS
    (the item becomes DONE) or INTERVENTION_REQUIRED (BLOCKED), max steps run
    out (BLOCKED), the job times out (FAILED), or it is cancelled. Evidence is
    committed after every step; .orch/runs/<id>/<attempt>/job_manifest.json
    holds the attempt's history.
    """
    _run(app, RunSettings(item_id, job, workers, job_timeout, max_steps, once or bool(item_id), forever=forever))


@cli.command()
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="Where to make the demo repository (new or empty). Default: a new temp folder.")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=3, show_default=True, help="Attempts at once.")
def demo(folder: Path | None, workers: int) -> None:
    """The main job, offline: a real repo, a queue of six tasks, real worktrees and commits.

    Scripted agents really edit a small program; the supervisor really runs its
    tests. One task takes two steps, one fails once and passes on retry, one ends
    INTERVENTION_REQUIRED. Ends with the queue's status and where to look.
    """
    from orchestrator import demo as demo_job
    from orchestrator.store.markdown import MarkdownStore

    target = folder or demo_job.default_folder()
    outcomes = demo_job.run(target, workers, click.echo)
    click.echo(render.run_summary(outcomes, MarkdownStore(target / QUEUE_NAME)))
    click.echo(demo_job.where_to_look(target))


# --- work orders ------------------------------------------------------------------------


@cli.command()
@click.option("--name", required=True, help="What the work order is; its id is <name>_<YYYYmmdd_HHMMSS>.")
@click.option(
    "--tasks",
    "tasks_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Tasks as JSONL or YAML; each needs a prompt (and may have id, title, agent, depends_on).",
)
@click.option("--count", type=click.IntRange(min=1), help="Make N demo tasks instead of reading --tasks.")
@click.option("--strategy", default="hybrid_supervisor", show_default=True,
              type=click.Choice(["hybrid_supervisor", "hybrid", "force_local", "force_metal", "force_cloud"]),
              help="How tasks are routed between pools.")  # fmt: skip
@json_option
@pass_app
def plan(app: App, name: str, tasks_file: Path | None, count: int | None, strategy: str, as_json: bool) -> None:
    """Create a job package: jobs/<job_id>/work_order.yaml and manifest.jsonl."""
    from orchestrator import workorder

    if bool(tasks_file) == bool(count):
        raise click.UsageError("give exactly one of --tasks FILE or --count N")
    tasks = workorder.load_tasks(tasks_file) if tasks_file else workorder.demo_tasks(count)
    package = workorder.plan(app.root, name, tasks, strategy)
    click.echo(render.as_json(package.read_order()) if as_json else render.planned(package, len(tasks), strategy))


@cli.command()
@click.argument("work_order", type=click.Path(exists=True, path_type=Path))
@click.option("--replay", is_flag=True, help="Start a fresh run of the same tasks (new rows).")
@json_option
@pass_app
def dispatch(app: App, work_order: Path, replay: bool, as_json: bool) -> None:
    """Add one queue row per task of WORK_ORDER (jobs/<job_id>/work_order.yaml); twice adds nothing."""
    from orchestrator import workorder

    package = workorder.Package.from_order(work_order)
    added, known = workorder.dispatch(app.store, package, replay=replay)
    report = {"job_id": package.job_id, "added": added, "already_dispatched": known}
    click.echo(render.as_json(report) if as_json else render.dispatched(package, added, known))


@cli.group()
def job() -> None:
    """Work orders: job status."""


@job.command(name="status")
@click.argument("job_id")
@json_option
@pass_app
def job_status(app: App, job_id: str, as_json: bool) -> None:
    """The work order's progress: dispatched, backlog, completed, failed, files."""
    from orchestrator import workorder

    state = workorder.status(app.store, workorder.Package.of(app.root, job_id))
    click.echo(render.as_json(state.as_dict()) if as_json else render.job_status(state))


# --- housekeeping -----------------------------------------------------------------------


@cli.command()
@click.option("--id", "item_id", metavar="ID", help="Only this item's finished attempts.")
@click.option("--job", metavar="JOB", help="Only this work order's finished attempts.")
@click.option("--finished", is_flag=True, help="Every finished attempt.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--force", is_flag=True, help="Remove even worktrees with uncommitted changes or unbranched commits.")
@json_option
@pass_app
def cleanup(app: App, item_id: str | None, job: str | None, finished: bool, dry_run: bool, force: bool,
            as_json: bool) -> None:  # fmt: skip
    """Remove the worktrees of finished attempts; their branches stay.

    A worktree with uncommitted changes, or commits that no branch holds, is
    refused (exit 1) unless --force, and the reason says which.
    """
    from orchestrator.cleanup import clean

    if sum(map(bool, (item_id, job, finished))) != 1:
        raise click.UsageError("give exactly one of --id ID, --job JOB or --finished")
    results = clean(app.store, app.root, item_id=item_id, job=job, dry_run=dry_run, force=force)
    click.echo(render.as_json([r.as_dict() for r in results]) if as_json else render.cleanup_lines(results))
    if any(result.action == "refused" for result in results):
        raise SystemExit(1)


@cli.command()
@click.option("--older-than", "days", type=click.FloatRange(min=0), required=True, metavar="DAYS",
              help="Archive what finished more than DAYS days ago.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Say what would move; move nothing.")
@json_option
@pass_app
def archive(app: App, days: float, dry_run: bool, as_json: bool) -> None:
    """Move finished job packages to jobs/archive/ and old DONE rows to QUEUE.archive.md."""
    from orchestrator.archive import archive as archive_old

    report = archive_old(app.store, app.root, app.queue if not app.db else app.root / QUEUE_NAME, days,
                         dry_run=dry_run)  # fmt: skip
    click.echo(render.as_json(report.as_dict()) if as_json else render.archived(report, dry_run))


# --- git -------------------------------------------------------------------------------


@cli.command()
@click.option("--dir", "folder", type=click.Path(file_okay=False, exists=True, path_type=Path), default=".",
              help="Anywhere inside the repository (default: here).")  # fmt: skip
def init(folder: Path) -> None:
    """Set this repository up for orch: QUEUE.md, orch.yaml, ignores, the QUEUE.md merge driver.

    Running it twice changes nothing.
    """
    from orchestrator.init import init as set_up

    done = set_up(folder)
    click.echo("\n".join(done) if done else "already set up: nothing to do")


@cli.command(name="merge-driver")
@click.argument("base", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("ours", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("theirs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def merge_driver(base: Path, ours: Path, theirs: Path) -> None:
    """git's merge driver for QUEUE.md (%O %A %B): merges by row id and by cell into OURS.

    Exit 0 when clean; 1 when rows conflict (marked with <<<<<<< around each
    such row only). orch init registers it.
    """
    from orchestrator.merge import run_driver

    raise SystemExit(run_driver(base, ours, theirs))


@cli.command()
@pass_app
def edit(app: App) -> None:
    """Edit QUEUE.md in $EDITOR under the lock; only a valid result replaces it.

    An invalid result is refused (exit 2) and kept in a recovery file under .orch/edit/.
    """
    from orchestrator.edit import edit as edit_queue
    from orchestrator.store.markdown import MarkdownStore

    if app.db:
        raise click.UsageError("orch edit works on a markdown queue; drop --db (or orch export, edit, import)")
    click.echo(edit_queue(MarkdownStore(app.queue)))


# --- watching -------------------------------------------------------------------------


@cli.command()
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--allow-remote", is_flag=True,
              help="Allow an address other than 127.0.0.1 (then every page needs the token too).")  # fmt: skip
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Another name the dashboard answers to, as in the Host header (repeatable).")  # fmt: skip
@click.option("--read-only", is_flag=True, help="Show, but offer no actions.")
@pass_app
def serve(app: App, port: int, host: str, allow_remote: bool, allowed_hosts: tuple[str, ...], read_only: bool) -> None:
    """A live web dashboard of the queue, the work orders and every attempt, on 127.0.0.1.

    Actions (cancel, retry, replan, reassign) need the page's per-process
    token and are recorded as operator@web. With --allow-remote on another
    address, pages, the API and the live stream need it too: open the printed
    address (it carries ?token= once, which becomes an HttpOnly cookie).
    """
    from orchestrator.web.server import LOOPBACK, Dashboard, make_server

    if host not in LOOPBACK and not allow_remote:
        raise click.UsageError(f"--host {host} would let other machines in: add --allow-remote to mean it")
    app.store.counts()  # fail now, not on the first request, if the queue cannot be read
    dashboard = Dashboard(app.root, lambda: _fresh_store(app), app.config, host, port, read_only, allowed_hosts)
    server = make_server(dashboard)
    click.echo(f"orch dashboard on {dashboard.url()} (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        dashboard.hub.stop()
        server.server_close()


def _fresh_store(app: App):
    """A store of the same queue for another thread (a database connection is per thread)."""
    from orchestrator.store import open_store

    if app.db:
        return open_store(queue=Path(QUEUE_NAME), db=app.db, policy=app.config.retry, lease=app.config.lease)
    return open_store(queue=app.queue, policy=app.config.retry)
