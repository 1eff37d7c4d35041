"""``python -m orchestrator``: the same CLI as ``orch``."""

from orchestrator.cli import cli

if __name__ == "__main__":
    cli()
