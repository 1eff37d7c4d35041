"""``orch demo``: the main job, offline. A real repo, a real queue, real worktrees and commits.

It makes a git repository with a small program and its tests, a queue of six
tasks, and an orch.yaml whose worker agents are scripted (they really edit
files, offline) and whose supervisor really runs the program's tests. Then it
runs the queue with several workers. One task needs two steps, one fails once
and passes on retry, and one never satisfies the tests and ends with
INTERVENTION_REQUIRED.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from orchestrator.errors import BadInputError

CALC = '''\
"""A tiny calculator: the program the demo's agents work on."""


def add(a, b):
    return a + b


def subtract(a, b):
    return a + b  # bug: should subtract
'''

TESTS = """\
import unittest

import calc


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(calc.add(2, 3), 5)
"""

SUBTRACT_TEST = """
class SubtractTest(unittest.TestCase):
    def test_subtract(self):
        import calc
        self.assertEqual(calc.subtract(5, 3), 2)
"""


def _function_step(name: str, body: str, test: str, say: str) -> dict:
    return {
        "append": {"calc.py": f"\n\ndef {name}:\n    {body}\n", "test_calc.py": test},
        "say": say,
    }


TASKS = [
    ("DEMO-1", "Add multiply()", "demo-multiply", ""),
    ("DEMO-2", "Fix subtract(): it adds", "demo-subtract", ""),
    ("DEMO-3", "Add divide() that refuses zero", "demo-divide", ""),
    ("DEMO-4", "Document the calculator in README.md", "demo-readme", "DEMO-1"),
    ("DEMO-5", "Add power(), fails once on a flaky start", "demo-power", ""),
    ("DEMO-6", "Make add() accept any number of arguments in O(1) memory", "demo-stuck", ""),
]

AGENTS = {
    "demo-multiply": [_function_step(
        "multiply(a, b)", "return a * b",
        "\n\nclass MultiplyTest(unittest.TestCase):\n    def test_multiply(self):\n"
        "        self.assertEqual(calc.multiply(4, 5), 20)\n",
        "added multiply() and its test")],
    "demo-subtract": [
        {"append": {"test_calc.py": SUBTRACT_TEST},
         "replace": [{"path": "calc.py", "old": "return a + b  # bug: should subtract", "new": "return b - a"}],
         "say": "swapped the operands (a first guess)"},
        {"replace": [{"path": "calc.py", "old": "return b - a", "new": "return a - b"}],
         "say": "fixed the order after the supervisor's feedback"},
    ],
    "demo-divide": [_function_step(
        "divide(a, b)", "if b == 0:\n        raise ZeroDivisionError('divide by zero')\n    return a / b",
        "\n\nclass DivideTest(unittest.TestCase):\n    def test_divide(self):\n"
        "        self.assertEqual(calc.divide(9, 3), 3)\n        with self.assertRaises(ZeroDivisionError):\n"
        "            calc.divide(1, 0)\n",
        "added divide() with a zero check")],
    "demo-readme": [{"append": {"README.md": "\n## Usage\n\n```python\nimport calc\ncalc.add(2, 3)\n```\n"},
                     "say": "documented the calculator"}],
    "demo-power": [{**_function_step(
        "power(a, b)", "return a ** b",
        "\n\nclass PowerTest(unittest.TestCase):\n    def test_power(self):\n"
        "        self.assertEqual(calc.power(2, 10), 1024)\n",
        "added power() and its test"),
        "on_attempt": {1: {"say": "the agent crashed while starting up", "exit": 3}}}],
    "demo-stuck": [{"append": {"test_calc.py": "\n\nclass VariadicTest(unittest.TestCase):\n"
                               "    def test_many(self):\n        self.assertEqual(calc.add(1, 2, 3), 6)\n"},
                    "say": "wrote a test for the new add(), but cannot make it pass"},
                   {"say": "still stuck: this needs a design decision"}],
}  # fmt: skip


def demo_config() -> dict:
    """The demo's orch.yaml: scripted workers per task, the real tests as supervisor."""
    agents = {name: {"kind": "scripted", "steps": steps, "timeout": 60} for name, steps in AGENTS.items()}
    agents["checks"] = {"kind": "command", "argv": ["python3", "-m", "unittest", "-q"], "timeout": 120}
    return {
        "agents": agents,
        "worker": "demo-multiply",
        "supervisor": "checks",
        "max_steps": 3,
        "job_timeout": 300,
        "lease": 60,
        "retry": {"max_attempts": 2, "backoff_base": 1, "jitter": 0.1},
        "id_prefix": "DEMO-",
    }


def queue_text() -> str:
    rows = "".join(
        f"| {task_id} | PENDING | {title} | | | 0 | | {agent} | {deps} | |\n" for task_id, title, agent, deps in TASKS
    )
    return (
        "# Demo queue\n\nSix tasks for the calculator in calc.py. `orch run` works them in\n"
        "git worktrees; the supervisor runs `python3 -m unittest`.\n\n"
        "| id | status | title | owner | started | attempts | max_attempts | agent | depends_on | notes |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + rows
    )


def _git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


def create(folder: Path) -> Path:
    """Make the demo repository in ``folder`` (new or empty); returns its QUEUE.md."""
    if folder.exists() and any(folder.iterdir()):
        raise BadInputError(f"{folder}: not empty; give --dir a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "calc.py": CALC, "test_calc.py": TESTS, "README.md": "# calc\n\nA tiny calculator.\n",
        ".gitignore": ".orch/\nQUEUE.md.lock\n__pycache__/\n", "QUEUE.md": queue_text(),
        "orch.yaml": yaml.safe_dump(demo_config(), sort_keys=False, width=100),
    }  # fmt: skip
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    _git(folder, "init", "-q", "-b", "main")
    _git(folder, "config", "user.name", "orch demo")
    _git(folder, "config", "user.email", "demo@orch.invalid")
    _git(folder, "add", "--all")
    _git(folder, "commit", "-q", "-m", "Demo: a calculator, its tests, and a queue of tasks")
    return folder / "QUEUE.md"


def default_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="orch-demo-"))


def run(folder: Path, workers: int, say: Callable[[str], None]) -> list:
    """Create the demo in ``folder`` and run its queue; returns the run's outcomes."""
    from orchestrator.config import load_config
    from orchestrator.runner import Runner, RunOptions
    from orchestrator.store.markdown import MarkdownStore

    queue = create(folder)
    say(f"demo repository: {folder}")
    config = load_config(folder)
    store = MarkdownStore(queue, policy=config.retry)
    started = time.monotonic()

    def progress(line: str) -> None:
        say(f"[{time.monotonic() - started:5.1f}s] {line}")

    return Runner(store, config, folder, RunOptions(workers=workers, owner="demo-runner"), progress).run()


def where_to_look(folder: Path) -> str:
    return (
        f"Where to look (in {folder}):\n"
        "  cat QUEUE.md                                 the queue, with each row's notes\n"
        "  git branch --list 'orch/*'                   one branch per attempt\n"
        "  git log --format='%h %s' orch/DEMO-2/1       evidence commits, one per step\n"
        "  git show --stat orch/DEMO-2/1                the last step's evidence and changes\n"
        "  cat .orch/runs/DEMO-5/2/job_manifest.json    an attempt's full history\n"
        "  orch status / orch show --id DEMO-6          from inside the folder"
    )
