"""Group commit for the markdown store: many processes' ops, one fsynced rewrite.

Each op is written as a request file under ``.orch/spool/``. Its process then
takes the queue lock; if its answer is already there, another process applied
it meanwhile, else it applies every waiting request (its own and the others')
in one batch and writes each answer. Waiters blocked on the lock therefore
mostly find their answer ready, and N busy workers share one fsync instead of
paying N. An answer is only written after the batch is safely on disk.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator import errors

STALE_ANSWER_SECONDS = 600


def _write(path: Path, data: object) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(temp, path)


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

    def submit(self, op: dict, lock: Callable[[], Any], lead: Callable[[list[dict]], list[dict]]) -> Any:
        """Queue ``op``, make sure it is applied (leading a batch if needed), return its answer."""
        self.folder.mkdir(parents=True, exist_ok=True)
        key = f"{time.time_ns():020d}.{os.getpid()}.{threading.get_ident()}.{os.urandom(4).hex()}"
        request, answer = self.folder / f"{key}.req", self.folder / f"{key}.ans"
        _write(request, op)
        while not answer.exists():
            with lock():
                if not answer.exists():
                    self._lead(lead)
        result = json.loads(answer.read_text(encoding="utf-8"))
        answer.unlink()
        if "error" in result:
            _raise(result)
        return result["value"]

    def _lead(self, lead: Callable[[list[dict]], list[dict]]) -> None:
        """Apply every waiting request in one batch; called with the queue lock held."""
        self._sweep()
        waiting = sorted(self.folder.glob("*.req"))
        if not waiting:
            return
        requests = [json.loads(path.read_text(encoding="utf-8")) for path in waiting]
        try:
            answers = lead(requests)
        except errors.OrchError as error:  # a malformed queue, say: every op in the batch gets the error
            answers = [{"error": type(error).__name__, "message": str(error)}] * len(requests)
        for path, result in zip(waiting, answers, strict=True):
            _write(path.with_suffix(".ans"), result)
            path.unlink()

    def _sweep(self) -> None:
        """Answers nobody came for (their process died) are dropped after a while."""
        cutoff = time.time() - STALE_ANSWER_SECONDS
        for path in self.folder.glob("*.ans"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass
