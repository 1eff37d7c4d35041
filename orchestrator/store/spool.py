"""Group commit for the markdown store: many processes' ops, one fsynced rewrite.

A process whose lock is free applies its op at once, with every request
waiting in ``.orch/spool/``, in one batch. Otherwise it writes its op there as
a request file and takes the queue lock; if its answer is already there,
another process applied it meanwhile, else it applies every waiting request
(its own and the others') in one batch and writes each answer. Waiters
blocked on the lock therefore mostly find their answer ready, and N busy
workers share one fsync instead of paying N. An answer is only written after
the batch is safely on disk.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator import errors

STALE_ANSWER_SECONDS = 600


def _write(path: Path, data: object) -> None:
    import json  # here and below on first use: reading the queue never needs json

    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(temp, path)


def _value(answer: dict) -> Any:
    """An op's value from its answer, or the error it raised."""
    if "error" in answer:
        _raise(answer)
    return answer["value"]


def _raise(answer: dict) -> None:
    """Raise the error an op raised in whichever process applied it."""
    cls = getattr(errors, answer["error"], errors.OrchError)
    if not (isinstance(cls, type) and issubclass(cls, errors.OrchError)):
        cls = errors.OrchError
    error = cls.__new__(cls)
    Exception.__init__(error, answer["message"])
    raise error


class Spool:
    """Request and answer files, and the leader loop around them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def submit(
        self,
        op: dict,
        lock: Callable[[], Any],
        lead: Callable[[list[dict]], list[dict]],
        try_lock: Callable[[], Any] | None = None,
    ) -> Any:
        """Make sure ``op`` is applied (leading a batch if needed) and return its answer.

        ``try_lock()`` returns the lock held, or None at once if someone else
        holds it. A process that gets the lock at once leads without a request
        file of its own: its op goes first in its batch, and its answer never
        touches the disk. Otherwise it queues ``op`` as a file and waits.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        held = try_lock() if try_lock is not None else None
        if held is not None:
            with held:
                return _value(self._lead(lead, own=op))
        key = f"{time.time_ns():020d}.{os.getpid()}.{threading.get_ident()}.{os.urandom(4).hex()}"
        request, answer = self.folder / f"{key}.req", self.folder / f"{key}.ans"
        _write(request, op)
        while not answer.exists():
            with lock():
                if not answer.exists():
                    self._lead(lead)
        import json

        result = json.loads(answer.read_text(encoding="utf-8"))
        answer.unlink()
        return _value(result)

    def _lead(self, lead: Callable[[list[dict]], list[dict]], own: dict | None = None) -> dict | None:
        """Apply ``own`` (if given) and every waiting request in one batch; called with the queue lock held.

        Returns the answer to ``own``; the waiting requests' answers are written for them.
        """
        self._sweep()
        waiting = sorted(self.folder.glob("*.req"))
        if not waiting and own is None:
            return None
        import json

        requests = ([own] if own is not None else []) + [json.loads(path.read_text(encoding="utf-8"))
                                                           for path in waiting]  # fmt: skip
        try:
            answers = lead(requests)
        except errors.OrchError as error:  # a malformed queue, say: every op in the batch gets the error
            answers = [{"error": type(error).__name__, "message": str(error)}] * len(requests)
        mine = answers.pop(0) if own is not None else None
        for path, result in zip(waiting, answers, strict=True):
            _write(path.with_suffix(".ans"), result)
            path.unlink()
        return mine

    def _sweep(self) -> None:
        """Answers nobody came for (their process died) are dropped after a while."""
        cutoff = time.time() - STALE_ANSWER_SECONDS
        for path in self.folder.glob("*.ans"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass
