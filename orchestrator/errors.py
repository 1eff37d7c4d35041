"""The whole exception tree of orch; ``exit_code`` follows the CLI contract."""

from __future__ import annotations


class OrchError(Exception):
    """Base class. ``exit_code`` follows the CLI contract: 1 refused, 2 bad input."""

    exit_code = 1


class RefusedError(OrchError):
    """A rule refused the operation (not found, not eligible, max attempts)."""


class AbsentError(RefusedError):
    """What was asked for does not exist (the dashboard answers 404)."""


class NotFoundError(AbsentError):
    """No item has this id."""

    def __init__(self, item_id: str, where: str = "") -> None:
        self.item_id = item_id
        suffix = f" in {where}" if where else ""
        super().__init__(f"no item with id '{item_id}'{suffix}")


class NoWorkOrderError(AbsentError):
    """No work order has this job id."""

    def __init__(self, job_id: str, order_path) -> None:
        self.job_id = job_id
        super().__init__(f"no work order '{job_id}': {order_path} does not exist (orch plan makes one)")


class NotEligibleError(RefusedError):
    """The item's state does not allow the operation."""

    def __init__(self, item_id: str, status: str, action: str, why: str = "") -> None:
        self.item_id, self.status, self.action = item_id, status, action
        reason = why or f"it is {status}"
        super().__init__(f"cannot {action} {item_id}: {reason}")


class MaxAttemptsError(RefusedError):
    """The item used up its attempts."""

    def __init__(self, item_id: str, attempts: int, max_attempts: int) -> None:
        self.item_id, self.attempts, self.max_attempts = item_id, attempts, max_attempts
        super().__init__(
            f"cannot retry {item_id}: {attempts} of {max_attempts} attempts used (raise max_attempts or replan it)"
        )


class LeaseLostError(RefusedError):
    """A fenced call (heartbeat, complete, fail) no longer owns the item."""

    def __init__(self, item_id: str, owner: str, why: str) -> None:
        self.item_id, self.owner = item_id, owner
        super().__init__(f"{owner} no longer holds {item_id}: {why}")


class NothingRunnableError(RefusedError):
    """A claim found no runnable item."""

    def __init__(self) -> None:
        super().__init__("nothing runnable")


class DuplicateIdError(RefusedError):
    """An id that is taken already."""

    def __init__(self, item_id: str, where: str = "") -> None:
        self.item_id = item_id
        suffix = f" in {where}" if where else ""
        super().__init__(f"id '{item_id}' is taken already{suffix}; choose another --id")


class BusyError(RefusedError):
    """A lock or database stayed busy past its timeout."""


class BadInputError(OrchError):
    """The input cannot be used as given."""

    exit_code = 2


class QueueFormatError(BadInputError):
    """QUEUE.md breaks a house rule; ``problems`` holds every one found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = problems[0]
        self.path, self.line, self.problem = first.path, first.line, first.message
        more = len(problems) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''}: run orch validate)" if more else ""
        super().__init__(f"{first}{tail}")


class Problem:
    """One broken house rule at ``path:line``."""

    __slots__ = ("path", "line", "message")

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path, self.line, self.message = path, line, message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"

    def __repr__(self) -> str:
        return f"Problem({self.path!r}, {self.line}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and str(self) == str(other)

    def as_dict(self) -> dict:
        return {"path": self.path, "line": self.line, "problem": self.message}


class SchemaError(BadInputError):
    """A database that is not an orch queue, or one made by a newer orch."""


class BadIdError(BadInputError):
    """An id that may not become a row, path or branch name."""


class ConfigError(BadInputError):
    """orch.yaml or a command's settings are wrong; the message names the key."""


class MissingPathError(BadInputError):
    """A queue, database or other named path does not exist."""


class AgentError(OrchError):
    """An agent step failed; the runner records the item as FAILED.

    ``usage`` and ``exit_code``: what the failed step still reported (tokens and cost were spent all the same).
    """

    def __init__(self, message: str, *, usage: dict | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.usage, self.exit_code = usage or {}, exit_code


class AgentTimeoutError(AgentError):
    """An agent step or the whole job ran past its timeout (``whole_job``: the job's time ran out)."""

    def __init__(self, message: str, seconds: float, *, whole_job: bool = False) -> None:
        self.seconds = seconds
        self.whole_job = whole_job
        super().__init__(message)


class AgentCancelledError(AgentError):
    """The step was stopped because its item was cancelled or its lease lost."""
