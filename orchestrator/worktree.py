"""Git worktrees for attempts: create (or recycle from a pool), commit evidence, remove.

Git is driven through the git CLI: GitPython's index API commits several
times slower on big trees. The evidence path (stage, diff, commit: a few
times a step) calls git directly, as GitPython's ``repo.git`` would, without
its per-call overhead; the rest goes through ``repo.git``. Branches are
``orch/<id>/<attempt>`` and worktrees ``.orch/worktrees/<id>/<attempt>``; ids
were validated before they got here, so they are safe as path parts and
branch names.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import AgentError, BadInputError
from orchestrator.locks import exclusive

FALLBACK_IDENTITY = ("orch", "orch@localhost")


def _git_error(error: Exception, what: str) -> AgentError:
    detail = getattr(error, "stderr", "") or str(error)
    return AgentError(f"git {what} failed: {str(detail).strip()[:300]}")


def open_repo(root: Path):
    """The GitPython repo at ``root``; bad input if it is not a git repository."""
    from git import InvalidGitRepositoryError, NoSuchPathError, Repo

    try:
        return Repo(root, search_parent_directories=True)
    except (InvalidGitRepositoryError, NoSuchPathError):
        raise BadInputError(f"{root}: not inside a git repository (orch run needs one for worktrees)") from None


def resolve_base(repo, ref: str = "") -> str:
    """The commit sha of ``ref`` (default: the current HEAD)."""
    from git import GitCommandError

    try:
        return repo.git.rev_parse("--verify", f"{ref or 'HEAD'}^{{commit}}")
    except GitCommandError:
        raise BadInputError(f"base ref {ref or 'HEAD'!r} is not a commit in {repo.working_dir}") from None


@dataclass(frozen=True)
class Worktree:
    """One attempt's checkout."""

    path: Path
    branch: str
    base: str


class Worktrees:
    """Creates attempt worktrees under ``.orch/worktrees``; recycles clean ones when pooling."""

    def __init__(self, repo, runtime_dir: Path, pool_size: int = 0) -> None:
        self.repo = repo
        self.root = Path(runtime_dir) / "worktrees"
        self.pool_dir = Path(runtime_dir) / "pool"
        self.pool_size = pool_size

    def _locked(self):
        """git's worktree bookkeeping is not safe against a concurrent add (threads or runners)."""
        return exclusive(self.root / ".lock")

    def create(self, item_id: str, attempt: int, base: str) -> Worktree:
        with self._locked():
            return self._create(item_id, attempt, base)

    def _create(self, item_id: str, attempt: int, base: str) -> Worktree:
        from git import GitCommandError

        path, branch = self._free_name(item_id, attempt)
        recycled = self._from_pool(path, branch, base)
        if recycled is not None:
            return recycled
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.repo.git.worktree("add", "--quiet", "-b", branch, str(path), base)
        except GitCommandError as error:
            raise _git_error(error, f"worktree add {path}") from None
        return Worktree(path, branch, base)

    def _free_name(self, item_id: str, attempt: int) -> tuple[Path, str]:
        """``.orch/worktrees/<id>/<attempt>`` on ``orch/<id>/<attempt>``; ``.2``, ``.3``... if a queue
        that was reset (a new database, say) repeats an attempt number: an old branch is never touched."""
        for suffix in ("", *(f".{k}" for k in range(2, 100))):
            path, branch = self.root / item_id / f"{attempt}{suffix}", f"orch/{item_id}/{attempt}{suffix}"
            if not _branch_exists(self.repo, branch) and not path.exists():
                return path, branch
        raise AgentError(f"branches orch/{item_id}/{attempt} to .99 all exist; clean some up (orch cleanup)")

    def _from_pool(self, path: Path, branch: str, base: str) -> Worktree | None:
        """A finished, clean worktree moved into place and reset to ``base`` on the new branch."""
        from git import GitCommandError, Repo

        if not self.pool_size or not self.pool_dir.is_dir():
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        for spare in sorted(self.pool_dir.iterdir()):
            try:
                # git renames the folder, then its records: of two runners taking the same spare, one
                # rename fails and that one moves on. (A plain rename would leave git's records behind.)
                self.repo.git.worktree("move", str(spare), str(path))
            except GitCommandError:
                continue
            try:
                git = Repo(path).git
                git.checkout("--quiet", "--force", "-B", branch, base)
                git.clean("-fdxq")
                return Worktree(path, branch, base)
            except GitCommandError:
                try:
                    self.repo.git.worktree("remove", "--force", str(path))
                except GitCommandError:
                    shutil.rmtree(path, ignore_errors=True)
                    self.repo.git.worktree("prune")
        return None

    def finish(self, worktree: Worktree) -> bool:
        """Return a clean finished worktree to the pool (detached); False if it stays where it is."""
        if not self.pool_size:
            return False
        with self._locked():
            return self._finish(worktree)

    def _finish(self, worktree: Worktree) -> bool:
        from git import GitCommandError, Repo

        spares = [p for p in self.pool_dir.iterdir()] if self.pool_dir.is_dir() else []
        if len(spares) >= self.pool_size:
            return False
        repo = Repo(worktree.path)
        if repo.is_dirty(untracked_files=True):
            return False
        self.pool_dir.mkdir(parents=True, exist_ok=True)
        spare = self.pool_dir / f"spare-{os.getpid()}-{os.urandom(3).hex()}"
        try:
            repo.git.checkout("--quiet", "--detach")
            self.repo.git.worktree("move", str(worktree.path), str(spare))
        except GitCommandError:
            return False
        return True


def git(cwd: Path, *args: str) -> str:
    """Run ``git args`` in ``cwd`` and return its output (as ``repo.git`` does: C locale, one newline off).

    :raises AgentError: git failed, saying which command and why.
    """
    try:
        done = subprocess.run(["git", *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env={**os.environb, b"LANGUAGE": b"C", b"LC_ALL": b"C"}, check=False)  # fmt: skip
    except OSError as error:
        raise AgentError(f"git {_command(args)} failed: {error.strerror}") from None
    if done.returncode != 0:
        raise AgentError(f"git {_command(args)} failed: {(done.stderr or done.stdout).strip()[:300]}")
    return done.stdout.removesuffix("\n")


def _command(args: tuple[str, ...]) -> str:
    """The git command's name, past any ``-c key=value`` options."""
    rest = list(args)
    while rest[:1] == ["-c"]:
        rest = rest[2:]
    return rest[0] if rest else "git"


def commit_identity(repo) -> tuple[str, ...]:
    """``-c`` options naming orch as the committer when git's config names nobody (else none)."""
    reader = repo.config_reader()
    if reader.get_value("user", "name", "") and reader.get_value("user", "email", ""):
        return ()
    return ("-c", f"user.name={FALLBACK_IDENTITY[0]}", "-c", f"user.email={FALLBACK_IDENTITY[1]}")


def stage_all(path: Path) -> str:
    """Stage every change in the worktree; returns ``git diff --cached --stat`` against HEAD."""
    git(path, "add", "--all")
    return git(path, "diff", "--cached", "--stat", "HEAD")


def commit_all(path: Path, message: str, identity: tuple[str, ...] | None = None, repo=None) -> str:
    """Stage everything in the worktree and commit it (even if empty); returns the sha.

    ``identity`` is ``commit_identity``'s answer and ``repo`` the worktree's GitPython repo, when the caller
    keeps them (an attempt commits every step). Git's automatic maintenance is left to ``maintain``.
    """
    from git import Repo, SymbolicReference

    repo = repo if repo is not None else Repo(path)
    identity = commit_identity(repo) if identity is None else identity
    git(path, "add", "--all")
    git(path, *identity, "-c", "maintenance.auto=false", "commit", "--quiet", "--no-verify", "--allow-empty",
        "-m", message)  # fmt: skip
    return SymbolicReference.dereference_recursive(repo, "HEAD")  # read from the ref files: no git process


def maintain(root: Path) -> None:
    """What ``git commit`` does after each commit (``git maintenance run --auto``), for many commits at once."""
    try:
        subprocess.run(["git", "maintenance", "run", "--auto", "--quiet"], cwd=root, stdin=subprocess.DEVNULL,
                       capture_output=True, check=False)  # fmt: skip
    except OSError:
        pass  # housekeeping only: the commits are made


def _branch_exists(repo, branch: str) -> bool:
    """Whether ``refs/heads/<branch>`` exists (loose or packed), read in process."""
    from git import SymbolicReference

    try:
        SymbolicReference.dereference_recursive(repo, f"refs/heads/{branch}")
    except ValueError:
        return False
    return True


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file, then replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temp, path)


def copy_file(source: Path, target: Path, limit: int | None = None) -> None:
    """Copy a file, keeping at most its last ``limit`` bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if limit is None or source.stat().st_size <= limit:
        shutil.copyfile(source, target)
        return
    with source.open("rb") as stream:
        stream.seek(source.stat().st_size - limit)
        target.write_bytes(stream.read())
