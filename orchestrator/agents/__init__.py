"""Agents behind one interface; ``get_agent`` builds one from its orch.yaml entry."""

from __future__ import annotations

from orchestrator.agents.base import Agent, StepRequest, StepResult
from orchestrator.config import AgentConfig
from orchestrator.errors import ConfigError
from orchestrator.procs import ProcessRegistry


def get_agent(spec: AgentConfig, registry: ProcessRegistry | None = None, grace: float = 5.0) -> Agent:
    """The agent an ``agents.<name>`` entry describes."""
    if spec.kind == "command":
        from orchestrator.agents.command import CommandAgent

        return CommandAgent(spec.name, spec.argv, dict(spec.env), registry, grace)
    if spec.kind == "scripted":
        from orchestrator.agents.scripted import ScriptedAgent

        return ScriptedAgent(spec.name, (), dict(spec.env), registry, grace, steps=spec.steps)
    raise ConfigError(f"agents.{spec.name}.kind: {spec.kind!r} is not supported by this version of orch")


__all__ = ["Agent", "StepRequest", "StepResult", "get_agent"]
