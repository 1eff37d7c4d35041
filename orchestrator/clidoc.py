"""``docs/cli.md``: every command's ``--help``, generated so it cannot drift.

Regenerate with ``python -m orchestrator.clidoc > docs/cli.md``;
``tests/test_docs.py`` fails when the file is out of date.
"""

from __future__ import annotations

import click

from orchestrator.cli import cli

INTRO = """\
# orch command reference

Every command's `--help`, generated from the code
(`python -m orchestrator.clidoc > docs/cli.md`; a test keeps this file in sync).
`python3 orchestrator/ops.py ...` from a checkout is the same CLI.
"""


def _commands(group: click.Group, prefix: list[str]) -> list[tuple[list[str], click.Command]]:
    found = []
    for name in sorted(group.commands):
        command = group.commands[name]
        found.append(([*prefix, name], command))
        if isinstance(command, click.Group):
            found += _commands(command, [*prefix, name])
    return found


WIDTH = {"terminal_width": 100, "max_content_width": 100}


def _context(command: click.Command, name: str, parent: click.Context | None) -> click.Context:
    """A context as the CLI itself would make it (so context settings apply), without running anything."""
    return command.make_context(name, [], parent=parent, resilient_parsing=True, **WIDTH)


def render() -> str:
    """The whole reference as markdown."""
    root = _context(cli, "orch", None)
    sections = [INTRO, "## orch\n\n```text\n" + cli.get_help(root) + "\n```\n"]
    for path, command in _commands(cli, []):
        parent = root
        for name in path[:-1]:
            parent = _context(cli.commands[name], name, parent)
        text = command.get_help(_context(command, path[-1], parent))
        sections.append(f"## orch {' '.join(path)}\n\n```text\n{text}\n```\n")
    return "\n".join(sections)


if __name__ == "__main__":
    print(render(), end="")
