"""orch: a git-friendly job orchestrator for coding agents.

The library API: ``open_store`` picks a backend, ``operations`` holds the
operator commands, ``model`` the items and their transitions.
"""

from __future__ import annotations

__version__ = "0.1.0"
