"""The prompts orch gives its agents. Row text is data: it is quoted here, never executed."""

from __future__ import annotations

from orchestrator.model import Item

VERDICT_HELP = """\
Reply with your verdict, either by writing JSON to the file named in
$ORCH_VERDICT_FILE, e.g. {"verdict": "CONTINUE", "reason": "...", "feedback": "..."},
or with a last line `VERDICT: SUCCESS|CONTINUE|INTERVENTION_REQUIRED <reason>`.
SUCCESS: the task is done. CONTINUE: the worker should try again, guided by your
feedback. INTERVENTION_REQUIRED: a human must decide.
"""


def _task(item: Item, details: str | None = None) -> str:
    lines = [f"# Task {item.id}: {item.title or '(no title)'}", ""]
    if details:
        lines += [details.rstrip(), ""]
    extra = {name: value for name, value in item.extra.items() if value}
    for name, value in extra.items():
        lines.append(f"- {name}: {value}")
    if item.notes:
        lines.append(f"- notes so far: {item.notes}")
    return "\n".join(lines).rstrip() + "\n"


def worker_prompt(item: Item, step: int, feedback: str, details: str | None = None) -> str:
    """What the worker is asked at ``step``: the task, then the supervisor's last feedback."""
    text = _task(item, details) + (
        "\nYou are the worker. Make the change in this git worktree (your current folder).\n"
        "Do not commit: orch commits your changes with the evidence after this step.\n"
    )
    if feedback:
        text += f"\n## Feedback from the supervisor after step {step - 1}\n\n{feedback}\n"
    return text


def supervisor_prompt(item: Item, step: int, worker_output: str, diff_stat: str, details: str | None = None) -> str:
    """What the supervisor is asked: judge the worker's step against the task."""
    return (
        _task(item, details)
        + f"\nYou are the supervisor. Review the worker's step {step} in this worktree.\n\n"
        + f"## Files changed\n\n{diff_stat or '(none)'}\n\n"
        + f"## The worker's output (last part)\n\n{worker_output[-4000:]}\n\n"
        + VERDICT_HELP
    )
