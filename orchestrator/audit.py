"""``jobs/<id>/execution.log``: the audit trail of a work order, one movement a line.

Format (seed 004): ``YYYY-MM-DD HH:MM:SS | [actor]  | EVENT           | message``.
Each line is one ``write`` on a file opened with ``O_APPEND`` under an
``flock``, so concurrent writers (threads or processes) never interleave a line.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

JOB_STARTED, DECISION, PULLED, ROUTED = "JOB_STARTED", "DECISION", "PULLED", "ROUTED"
STARTED, STEP, COMPLETED, FAILED = "STARTED", "STEP", "COMPLETED", "FAILED"
RETRIED, CANCELED, INTERVENTION, JOB_COMPLETED = "RETRIED", "CANCELED", "INTERVENTION", "JOB_COMPLETED"
EVENTS = (JOB_STARTED, DECISION, PULLED, ROUTED, STARTED, STEP, COMPLETED, FAILED, RETRIED, CANCELED,
          INTERVENTION, JOB_COMPLETED)  # fmt: skip
SYSTEM = "SYSTEM"


def format_line(actor: str, event: str, message: str, now: float | None = None) -> str:
    """One log line; the message is kept on one line whatever it holds."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if now is None else now))
    flat = " ".join(str(message).split())
    return f"{stamp} | {f'[{actor}]':<9} | {event:<15} | {flat}\n"


def append_event(path: Path, actor: str, event: str, message: str, now: float | None = None) -> None:
    """Append one movement to an execution log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = format_line(actor, event, message, now).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
    finally:
        os.close(fd)  # closing releases the lock
