"""``orch init``: make a repository ready for orch. Running it twice changes nothing.

It creates QUEUE.md and an orch.yaml of commented defaults (when missing),
ignores orch's runtime files, and registers the QUEUE.md merge driver: a line
in ``.gitattributes`` and the driver in ``.git/config``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from orchestrator.errors import BadInputError

IGNORES = (".orch/", "QUEUE.md.lock", "*.db-lock")
ATTRIBUTE = "QUEUE.md merge=orch-queue"
DRIVER_NAME = "orch QUEUE.md merge by row and cell"

ORCH_YAML = """\
# orch.yaml: every key is optional; unknown keys are an error naming the key.
# See docs/agents.md for each agent kind.

agents:
  coder:                      # the worker: any command that edits files in its folder
    kind: command             # command | claude | codex | gemini | cline | aider | ollama | openai | scripted
    argv: [python3, -c, "print('replace me with your agent')"]
    timeout: 900              # seconds per step
  checks:                     # the supervisor: exit 0 means SUCCESS, anything else CONTINUE
    kind: command
    argv: [python3, -m, pytest, -q]
worker: coder
supervisor: checks
max_steps: 6                  # worker/supervisor rounds before asking a human
job_timeout: 3600             # seconds for a whole attempt
lease: 300                    # seconds a claim lasts without a heartbeat
id_prefix: ORCH-              # orch add makes ids like ORCH-7k2m9q
# base_ref: main              # worktrees start here (default: the current HEAD)
# worktree_pool: 4            # recycle finished worktrees instead of making new ones
# retry: {max_attempts: 3, backoff_base: 60, backoff_factor: 2, backoff_cap: 3600, jitter: 0.1}
# pools:                      # for work orders (orch plan / dispatch / run --job)
#   local: {agent: coder, capacity: 2}
#   cloud: {agent: coder, capacity: 8, requests_per_minute: 60}
# strategy: hybrid            # force_local | force_cloud | hybrid
"""


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)


def repo_root(folder: Path) -> Path:
    done = _git(folder, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise BadInputError(f"{folder}: not inside a git repository; run git init first")
    return Path(done.stdout.strip())


def _ensure_lines(path: Path, lines: tuple[str, ...] | list[str]) -> list[str]:
    """Append the lines the file lacks; returns those added."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [line for line in lines if line not in present]
    if missing:
        glue = "" if not text or text.endswith("\n") else "\n"
        path.write_text(text + glue + "".join(line + "\n" for line in missing), encoding="utf-8")
    return missing


def driver_command() -> str:
    """How git runs the driver: this Python and package, so it works without orch on PATH."""
    return f"{shlex.quote(sys.executable)} -m orchestrator merge-driver %O %A %B"


def init(folder: Path) -> list[str]:
    """Set the repository up; returns what was done (empty when nothing was needed)."""
    from orchestrator.operations import new_queue_text

    root = repo_root(folder)
    done = []
    if not (root / "QUEUE.md").exists():
        (root / "QUEUE.md").write_text(new_queue_text(), encoding="utf-8")
        done.append("created QUEUE.md")
    if not (root / "orch.yaml").exists():
        (root / "orch.yaml").write_text(ORCH_YAML, encoding="utf-8")
        done.append("created orch.yaml (commented defaults)")
    added = _ensure_lines(root / ".gitignore", IGNORES)
    if added:
        done.append(f"ignored {', '.join(added)} in .gitignore")
    if _ensure_lines(root / ".gitattributes", [ATTRIBUTE]):
        done.append(f"added '{ATTRIBUTE}' to .gitattributes")
    for key, value in (("merge.orch-queue.name", DRIVER_NAME), ("merge.orch-queue.driver", driver_command())):
        if _git(root, "config", "--local", "--get", key).stdout.strip() != value:
            _git(root, "config", "--local", key, value)
            done.append(f"set {key} in .git/config")
    return done
