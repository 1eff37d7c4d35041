"""orch.yaml: defaults without it, and every mistake named by its key."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.config import Config, load_config, parse_config
from orchestrator.errors import ConfigError


def test_no_orch_yaml_means_the_defaults(tmp_path):
    config = load_config(tmp_path)
    assert (config.max_steps, config.job_timeout, config.lease, config.id_prefix) == (6, 3600, 300, "ORCH-")
    assert config.retry.max_attempts == 3 and config.strategy == "hybrid"


def test_the_design_documents_example_parses():
    text = """
agents:
  coder: {kind: command, argv: [python3, tools/agent.py, "{prompt_file}"], timeout: 900}
  checks: {kind: command, argv: [python3, -m, pytest, -q]}
  local: {kind: ollama, base_url: "http://127.0.0.1:11434", model: "qwen2.5-coder:7b"}
  cloud: {kind: openai, base_url: "https://api.example.com/v1", model: some-model, api_key_env: EXAMPLE_API_KEY}
worker: coder
supervisor: checks
max_steps: 6
job_timeout: 3600
pools:
  local: {agent: local, capacity: 2}
  cloud: {agent: cloud, capacity: 8, requests_per_minute: 60}
strategy: hybrid
"""
    config = parse_config(yaml.safe_load(text))
    assert isinstance(config, Config) and config.pools["cloud"].requests_per_minute == 60
    assert config.agents["coder"].argv == ("python3", "tools/agent.py", "{prompt_file}")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"wokrer": "x"}, "orch.yaml: wokrer: unknown key"),
        ({"agents": {"a": {"kind": "command", "argv": ["x"], "tiemout": 3}}}, "agents.a.tiemout: unknown key"),
        ({"agents": {"a": {"kind": "robot"}}}, "agents.a.kind: unknown kind 'robot'"),
        ({"agents": {"a": {"argv": "python3 x.py"}}}, "agents.a.argv: expected a list of strings"),
        ({"agents": {"a": {"argv": [1]}}}, "agents.a.argv: every item must be a string"),
        ({"agents": {"a": {"timeout": -1}}}, "agents.a.timeout: must be at least"),
        ({"max_steps": "many"}, "max_steps: expected a whole number"),
        ({"max_steps": True}, "max_steps: expected a whole number"),
        ({"worker": "ghost"}, "worker: no agent named 'ghost'"),
        ({"pools": {"p": {"agent": "ghost"}}}, "pools.p.agent: no agent named 'ghost'"),
        ({"strategy": "random"}, "strategy: unknown strategy 'random'"),
        ({"retry": {"max_attempts": 0}}, "retry.max_attempts: must be at least 1"),
        ({"id_prefix": "a b"}, "id_prefix: 'a b' cannot start an id"),
        ([1, 2], "(top level): expected a mapping"),
    ],
)
def test_each_mistake_names_its_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(data)


def test_the_seed_strategy_names_are_aliases():
    assert parse_config({"strategy": "force_metal"}).strategy == "force_local"
    assert parse_config({"strategy": "hybrid_supervisor"}).strategy == "hybrid"


def test_broken_yaml_names_the_line(tmp_path):
    (tmp_path / "orch.yaml").write_text("agents:\n  a: [unclosed\n")
    with pytest.raises(ConfigError, match=r"orch.yaml:\d+: not valid YAML"):
        load_config(tmp_path)
