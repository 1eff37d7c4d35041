"""The documentation keeps up with the code."""

from __future__ import annotations

from orchestrator import clidoc
from orchestrator.cli import cli
from tests.conftest import ROOT


def test_docs_cli_md_is_every_commands_current_help():
    assert (ROOT / "docs" / "cli.md").read_text() == clidoc.render(), (
        "docs/cli.md is out of date: python -m orchestrator.clidoc > docs/cli.md"
    )


def test_every_command_and_subcommand_has_a_docstring():
    for path, command in clidoc._commands(cli, []):
        assert command.help and len(command.help.strip()) > 10, path


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "./run-demo" in readme and "./run-tests" in readme
    assert "./run-tests" in (ROOT / ".ci" / "run").read_text()
