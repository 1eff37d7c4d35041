"""orch.yaml: agents, pools, routing and defaults, as frozen dataclasses.

Every key is optional and has a default; an unknown key or a wrong type is a
``ConfigError`` naming the key (``orch.yaml: agents.coder.timeout: ...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.model import Policy

CONFIG_NAME = "orch.yaml"
AGENT_KINDS = ("command", "claude", "codex", "gemini", "cline", "aider", "ollama", "openai", "scripted")
STRATEGIES = ("force_local", "force_cloud", "hybrid")
STRATEGY_ALIASES = {"force_metal": "force_local", "hybrid_supervisor": "hybrid"}
AGENT_KEYS = {
    "kind", "argv", "timeout", "base_url", "model", "api_key_env", "steps", "env",
    "max_retries", "options", "temperature", "max_tokens", "system",
}  # fmt: skip


@dataclass(frozen=True)
class AgentConfig:
    """One named agent; ``options`` holds what only some kinds use."""

    name: str
    kind: str = "command"
    argv: tuple[str, ...] = ()
    timeout: float = 900.0
    base_url: str = ""
    model: str = ""
    api_key_env: str = ""
    steps: tuple[Any, ...] = ()
    env: dict[str, str] = field(default_factory=dict, hash=False)
    max_retries: int = 3
    options: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class PoolConfig:
    """A pool of capacity for work orders: an agent, concurrency and a rate budget."""

    name: str
    agent: str
    capacity: int = 1
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


@dataclass(frozen=True)
class Config:
    """Everything orch.yaml can say, with defaults."""

    agents: dict[str, AgentConfig] = field(default_factory=dict, hash=False)
    worker: str = ""
    supervisor: str = ""
    max_steps: int = 6
    job_timeout: float = 3600.0
    lease: float = 300.0
    heartbeat: float = 0.0
    id_prefix: str = "ORCH-"
    base_ref: str = ""
    worktree_pool: int = 0
    retry: Policy = Policy()
    pools: dict[str, PoolConfig] = field(default_factory=dict, hash=False)
    strategy: str = "hybrid"
    path: str = CONFIG_NAME


def _require(value: Any, kind: type | tuple, key: str, what: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{key}: expected {what}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{key}: expected {what}, got {value!r}")
    return value


def _number(value: Any, key: str, *, minimum: float = 0, whole: bool = False) -> Any:
    kind = int if whole else (int, float)
    _require(value, kind, key, "a whole number" if whole else "a number")
    if value < minimum:
        raise ConfigError(f"{key}: must be at least {minimum:g}, got {value!r}")
    return value


def _unknown(data: dict, allowed: set[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ConfigError(f"{where}{key}: unknown key (known keys: {known})")


def _agent(name: str, data: Any, where: str) -> AgentConfig:
    key = f"{where}agents.{name}"
    _require(data, dict, key, "a mapping")
    _unknown(data, AGENT_KEYS, f"{key}.")
    kind = data.get("kind", "command")
    if kind not in AGENT_KINDS:
        raise ConfigError(f"{key}.kind: unknown kind {kind!r} (one of {', '.join(AGENT_KINDS)})")
    argv = data.get("argv", [])
    _require(argv, list, f"{key}.argv", "a list of strings")
    if not all(isinstance(part, str) for part in argv):
        raise ConfigError(f"{key}.argv: every item must be a string (quote numbers)")
    env = data.get("env", {})
    _require(env, dict, f"{key}.env", "a mapping of names to strings")
    options = {k: data[k] for k in ("temperature", "max_tokens", "system") if k in data}
    options.update(_require(data.get("options", {}), dict, f"{key}.options", "a mapping"))
    return AgentConfig(
        name=name,
        kind=kind,
        argv=tuple(argv),
        timeout=_number(data.get("timeout", 900), f"{key}.timeout", minimum=0.001),
        base_url=_require(data.get("base_url", ""), str, f"{key}.base_url", "a URL"),
        model=_require(data.get("model", ""), str, f"{key}.model", "a model name"),
        api_key_env=_require(data.get("api_key_env", ""), str, f"{key}.api_key_env", "a variable name"),
        steps=tuple(_require(data.get("steps", []), list, f"{key}.steps", "a list of steps")),
        env={str(k): str(v) for k, v in env.items()},
        max_retries=_number(data.get("max_retries", 3), f"{key}.max_retries", whole=True),
        options=options,
    )


def _pool(name: str, data: Any, agents: dict[str, AgentConfig], where: str) -> PoolConfig:
    key = f"{where}pools.{name}"
    _require(data, dict, key, "a mapping")
    _unknown(data, {"agent", "capacity", "requests_per_minute", "tokens_per_minute"}, f"{key}.")
    agent = _require(data.get("agent", ""), str, f"{key}.agent", "an agent name")
    if agent not in agents:
        raise ConfigError(f"{key}.agent: no agent named {agent!r} under agents")
    rpm, tpm = data.get("requests_per_minute"), data.get("tokens_per_minute")
    return PoolConfig(
        name=name,
        agent=agent,
        capacity=_number(data.get("capacity", 1), f"{key}.capacity", minimum=1, whole=True),
        requests_per_minute=None if rpm is None else _number(rpm, f"{key}.requests_per_minute", minimum=1),
        tokens_per_minute=None if tpm is None else _number(tpm, f"{key}.tokens_per_minute", minimum=1),
    )


def _retry(data: Any, where: str) -> Policy:
    key = f"{where}retry"
    _require(data, dict, key, "a mapping")
    defaults = Policy()
    _unknown(data, set(defaults.__dataclass_fields__), f"{key}.")
    return Policy(
        max_attempts=_number(
            data.get("max_attempts", defaults.max_attempts), f"{key}.max_attempts", minimum=1, whole=True
        ),
        backoff_base=_number(data.get("backoff_base", defaults.backoff_base), f"{key}.backoff_base"),
        backoff_factor=_number(data.get("backoff_factor", defaults.backoff_factor), f"{key}.backoff_factor", minimum=1),
        backoff_cap=_number(data.get("backoff_cap", defaults.backoff_cap), f"{key}.backoff_cap"),
        jitter=_number(data.get("jitter", defaults.jitter), f"{key}.jitter"),
    )


TOP_KEYS = {
    "agents", "worker", "supervisor", "max_steps", "job_timeout", "lease", "heartbeat",
    "id_prefix", "base_ref", "worktree_pool", "retry", "pools", "strategy",
}  # fmt: skip


def parse_config(data: Any, path: str = CONFIG_NAME) -> Config:
    """Validate a loaded orch.yaml mapping into a ``Config``."""
    if data is None:
        return Config(path=path)
    where = f"{path}: "
    _require(data, dict, f"{where}(top level)", "a mapping of keys")
    _unknown(data, TOP_KEYS, where)
    agents_data = _require(data.get("agents", {}), dict, f"{where}agents", "a mapping of agent names")
    agents = {str(name): _agent(str(name), spec, where) for name, spec in agents_data.items()}
    pools_data = _require(data.get("pools", {}), dict, f"{where}pools", "a mapping of pool names")
    strategy = data.get("strategy", "hybrid")
    strategy = STRATEGY_ALIASES.get(strategy, strategy)
    if strategy not in STRATEGIES:
        raise ConfigError(f"{where}strategy: unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
    config = Config(
        agents=agents,
        worker=_require(data.get("worker", ""), str, f"{where}worker", "an agent name"),
        supervisor=_require(data.get("supervisor", ""), str, f"{where}supervisor", "an agent name"),
        max_steps=_number(data.get("max_steps", 6), f"{where}max_steps", minimum=1, whole=True),
        job_timeout=_number(data.get("job_timeout", 3600), f"{where}job_timeout", minimum=0.001),
        lease=_number(data.get("lease", 300), f"{where}lease", minimum=0.001),
        heartbeat=_number(data.get("heartbeat", 0), f"{where}heartbeat"),
        id_prefix=_id_prefix(data.get("id_prefix", "ORCH-"), where),
        base_ref=_require(data.get("base_ref", ""), str, f"{where}base_ref", "a git ref"),
        worktree_pool=_number(data.get("worktree_pool", 0), f"{where}worktree_pool", whole=True),
        retry=_retry(data.get("retry", {}), where),
        pools={str(n): _pool(str(n), spec, agents, where) for n, spec in pools_data.items()},
        strategy=strategy,
        path=path,
    )
    for role in ("worker", "supervisor"):
        name = getattr(config, role)
        if name and name not in agents:
            raise ConfigError(f"{where}{role}: no agent named {name!r} under agents")
    return config


def _id_prefix(value: Any, where: str) -> str:
    from orchestrator.model import ID_PATTERN

    _require(value, str, f"{where}id_prefix", "a string")
    if value and not ID_PATTERN.fullmatch(value + "x"):
        raise ConfigError(f"{where}id_prefix: {value!r} cannot start an id (letters, digits, '.', '_', '-')")
    return value


def load_config(folder: Path) -> Config:
    """Read ``orch.yaml`` from ``folder``; defaults when there is none."""
    path = Path(folder) / CONFIG_NAME
    if not path.exists():
        return Config(path=str(path))
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    return parse_config(data, str(path))
