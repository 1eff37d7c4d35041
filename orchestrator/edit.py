"""``orch edit``: change QUEUE.md in $EDITOR under the lock; only a valid result replaces it.

The editor works on a copy. A result that breaks a house rule is refused and
kept in a recovery file under ``.orch/`` so no typing is lost.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

from orchestrator.errors import BadInputError, QueueFormatError
from orchestrator.queuefile import QueueFile
from orchestrator.store.markdown import MarkdownStore


class RejectedEditError(QueueFormatError):
    """The edited queue breaks a house rule; the edit is kept in ``kept``."""

    def __init__(self, problems: list, kept: Path) -> None:
        super().__init__(problems)
        self.kept = kept
        self.args = (f"{self.args[0]}; QUEUE.md is unchanged and your edit is kept in {kept}",)


def editor_argv(path: Path) -> list[str]:
    """The user's editor ($VISUAL, $EDITOR, else vi), split like a shell would, plus the file."""
    command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    return [*shlex.split(command), str(path)]


def edit(store: MarkdownStore) -> str:
    """Run the editor and apply its result; returns what happened."""
    with store._lock():
        original = store.read_bytes()
        folder = store.runtime_dir / "edit"
        folder.mkdir(parents=True, exist_ok=True)
        draft = folder / store.path.name
        draft.write_bytes(original)
        done = subprocess.run(editor_argv(draft))
        if done.returncode != 0:
            raise BadInputError(f"the editor exited {done.returncode}; {store.display} is unchanged (draft: {draft})")
        edited = draft.read_bytes()
        if edited == original:
            return f"{store.display}: no changes"
        problems = QueueFile.parse(store.display, edited).problems
        if problems:
            keep = folder / f"{store.path.stem}.rejected-{time.strftime('%Y%m%d-%H%M%S')}.md"
            os.replace(draft, keep)
            raise RejectedEditError(problems, keep)
        if not store._replace_if_unchanged(original, edited):
            keep = folder / f"{store.path.stem}.unsaved-{time.strftime('%Y%m%d-%H%M%S')}.md"
            os.replace(draft, keep)
            raise BadInputError(f"{store.display} was changed by someone else meanwhile; your edit is kept in {keep}")
        draft.unlink(missing_ok=True)
        return f"{store.display}: saved"
