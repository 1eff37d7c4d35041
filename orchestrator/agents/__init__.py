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
    if spec.kind in ("claude", "codex", "gemini", "cline", "aider"):
        return _preset(spec, registry, grace)
    if spec.kind in ("ollama", "openai"):
        from orchestrator.agents.http import http_agent

        return http_agent(spec)
    raise ConfigError(f"agents.{spec.name}.kind: {spec.kind!r} is not supported by this version of orch")


def _preset(spec: AgentConfig, registry: ProcessRegistry | None, grace: float) -> Agent:
    from orchestrator.agents.command import CommandAgent
    from orchestrator.agents.presets import PRESETS

    preset = PRESETS[spec.kind]
    return CommandAgent(
        spec.name, spec.argv or preset.argv, dict(spec.env), registry, grace, preset.parse, preset.stdin,
        preset.judge_by_diff, f"the {spec.kind} preset needs it: {preset.install}, or set agents.{spec.name}.argv",
        judged_by_exit_code=False,
    )  # fmt: skip


__all__ = ["Agent", "StepRequest", "StepResult", "get_agent"]
