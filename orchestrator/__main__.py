"""The ``orch`` console script and ``python -m orchestrator``: the CLI, started cheaply."""

import gc


def main() -> None:
    # A command is a short process that builds many small objects, imports included, and frees
    # them by reference counting; the cyclic collector would walk them again and again.
    gc.set_threshold(100_000, 50, 50)
    from orchestrator.cli import cli

    cli(prog_name="orch")


if __name__ == "__main__":
    main()
