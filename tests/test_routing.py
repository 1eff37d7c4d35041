"""Router decisions for work orders, stepped with an explicit clock (no sleeps, no threads).

Pools: ``local`` fills first under ``hybrid``; ``cloud`` takes the spill within
its requests-per-minute and tokens-per-minute budgets (a sliding minute); a
pool that answered 429 is paused until its reset. The seed's names
(``force_metal``, ``hybrid_supervisor``) map onto ``force_local`` and ``hybrid``.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.conductor import Conductor
from orchestrator.config import STRATEGY_ALIASES, PoolConfig, load_config, parse_config
from orchestrator.errors import ConfigError
from orchestrator.model import Status
from orchestrator.routing import WINDOW, Router
from orchestrator.runner import Runner, RunOptions
from orchestrator.store.markdown import MarkdownStore
from orchestrator.workorder import dispatch, plan
from tests.runs import config
from tests.test_agents_presets import calls, claude_limit, claude_result, fake_cli
from tests.test_workorder import job_repo


def pools(local: int = 2, cloud: int = 2, **cloud_budget) -> dict[str, PoolConfig]:
    return {"local": PoolConfig("local", "w", local), "cloud": PoolConfig("cloud", "c", cloud, **cloud_budget)}


def start(router: Router, now: float) -> str | None:
    """What the conductor does per claim: ask, and count the start where the answer is a pool."""
    decision = router.decide(now)
    if decision.pool is not None:
        router.started(decision.pool, now)
    return decision.pool


def orch_yaml(strategy: str, **extra) -> dict:
    return {
        "agents": {"w": {"kind": "command", "argv": ["true"]}, "c": {"kind": "command", "argv": ["true"]}},
        "worker": "w", "supervisor": "w", "strategy": strategy,
        "pools": {"local": {"agent": "w", "capacity": 2}, "cloud": {"agent": "c", "capacity": 3}}, **extra,
    }  # fmt: skip


# --- hybrid: capacity, spill, wait ----------------------------------------------------


def test_hybrid_fills_local_to_capacity_then_spills_to_cloud():
    router = Router(pools(local=2, cloud=3), "hybrid")
    first = router.decide(0.0)
    assert (first.pool, first.reason) == ("local", "Hybrid: local pool local 0/2")
    assert [start(router, 0.0) for _ in range(5)] == ["local", "local", "cloud", "cloud", "cloud"]
    assert router.pools["local"].running == 2 and router.pools["cloud"].running == 3


def test_a_spill_says_why_local_was_skipped():
    router = Router(pools(local=1, cloud=2, requests_per_minute=5), "hybrid")
    start(router, 0.0)
    decision = router.decide(1.0)
    assert decision.pool == "cloud"
    assert decision.reason == "Hybrid: cloud pool cloud 0/2, budget 0/5; local full (1/1)"


def test_both_pools_full_means_wait_with_a_reason():
    router = Router(pools(local=1, cloud=1), "hybrid")
    assert [start(router, 0.0) for _ in range(2)] == ["local", "cloud"]
    decision = router.decide(0.5)
    assert decision.pool is None
    assert decision.reason == "hybrid: wait (local full (1/1); cloud full (1/1))"
    assert decision.wait == 0.0  # capacity frees when a task ends, not at a known time
    assert start(router, 0.5) is None and router.pools["cloud"].running == 1


def test_finished_frees_capacity_for_the_next_task():
    router = Router(pools(local=1, cloud=1), "hybrid")
    start(router, 0.0)
    start(router, 0.0)
    router.finished("local", 3.0)
    assert router.decide(3.0).pool == "local"
    router.finished("cloud", 4.0)
    router.finished("local", 4.0)
    assert (router.pools["local"].running, router.pools["cloud"].running) == (0, 0)


def test_finishing_an_idle_pool_never_goes_negative():
    router = Router(pools(), "hybrid")
    router.finished("cloud", 1.0)
    assert router.pools["cloud"].running == 0
    assert [start(router, 2.0) for _ in range(4)] == ["local", "local", "cloud", "cloud"]


# --- budgets over a sliding minute --------------------------------------------------------


def test_cloud_spill_stays_within_its_requests_per_minute_and_frees_after_60s():
    router = Router(pools(local=1, cloud=10, requests_per_minute=3), "hybrid")
    assert start(router, 0.0) == "local"  # local stays busy throughout
    for moment in (0.0, 10.0, 20.0):
        assert start(router, moment) == "cloud"
        router.finished("cloud", moment + 1)  # capacity is not what stops it
    blocked = router.decide(30.0)
    assert blocked.pool is None
    assert blocked.reason == "hybrid: wait (local full (1/1); cloud request budget spent (3/3 per minute))"
    assert blocked.wait == pytest.approx(30.0)  # the request at 0.0 leaves the minute at 60.0
    assert router.decide(59.999).pool is None
    assert start(router, WINDOW) == "cloud"
    assert router.decide(WINDOW).wait == pytest.approx(10.0)  # next to leave: the one at 10.0


def test_cloud_spill_stays_within_its_tokens_per_minute_and_frees_after_60s():
    router = Router(pools(local=1, cloud=10, tokens_per_minute=1000), "hybrid")
    start(router, 0.0)
    start(router, 1.0)
    start(router, 2.0)
    router.finished("cloud", 5.0, tokens=600)
    router.finished("cloud", 10.0, tokens=400)
    blocked = router.decide(11.0)
    assert blocked.pool is None
    assert "cloud token budget spent (1000/1000 per minute)" in blocked.reason
    assert blocked.wait == pytest.approx(54.0)  # 5.0 + 60 - 11.0
    assert router.decide(64.9).pool is None
    assert router.decide(65.0).pool == "cloud"  # 400 tokens left in the minute


def test_both_full_waits_for_the_soonest_budget_to_free():
    router = Router(pools(local=1, cloud=5, requests_per_minute=1), "hybrid")
    start(router, 0.0)
    start(router, 4.0)
    decision = router.decide(10.0)
    assert decision.pool is None and decision.wait == pytest.approx(54.0)
    assert "local full (1/1)" in decision.reason and "cloud request budget spent (1/1 per minute)" in decision.reason


# --- forced strategies ---------------------------------------------------------------------


def test_force_local_never_routes_to_cloud_even_when_local_is_full():
    router = Router(pools(local=2, cloud=5), "force_local")
    assert [start(router, 0.0) for _ in range(3)] == ["local", "local", None]
    decision = router.decide(1.0)
    assert decision.reason == "force_local: wait (local full (2/2))"
    assert router.pools["cloud"].running == 0 and router.capacity() == 2


def test_force_cloud_never_routes_to_local_even_when_local_is_idle():
    router = Router(pools(local=2, cloud=2, requests_per_minute=10), "force_cloud")
    first = router.decide(0.0)
    assert (first.pool, first.reason) == ("cloud", "Force cloud: cloud pool cloud 0/2, budget 0/10")
    assert [start(router, 0.0) for _ in range(3)] == ["cloud", "cloud", None]
    assert router.pools["local"].running == 0 and router.capacity() == 2


def test_force_cloud_without_a_cloud_pool_says_so():
    router = Router({"local": PoolConfig("local", "w", 4)}, "force_cloud")
    decision = router.decide(0.0)
    assert decision.pool is None and decision.reason == "force_cloud: no pool of that kind in orch.yaml"


def test_the_first_pool_is_local_when_none_is_named_local():
    router = Router({"metal": PoolConfig("metal", "w", 1), "api": PoolConfig("api", "c", 1)}, "hybrid")
    assert [start(router, 0.0) for _ in range(3)] == ["metal", "api", None]


def test_a_lone_pool_named_cloud_is_a_cloud_pool():
    router = Router({"cloud": PoolConfig("cloud", "c", 2)}, "force_cloud")
    assert router.decide(0.0).pool == "cloud"


@pytest.mark.parametrize("budget", ["requests_per_minute", "tokens_per_minute"])
def test_a_zero_budget_pool_is_refused_or_waited_on_never_a_crash(budget):
    data = orch_yaml("force_cloud")
    data["pools"]["cloud"][budget] = 0
    try:
        config = parse_config(data)
    except ConfigError:
        return  # refusing a zero budget in orch.yaml is a fine answer too
    decision = Router(config.pools, config.strategy).decide(0.0)
    assert decision.pool is None and "budget" in decision.reason


# --- pause after a 429 ----------------------------------------------------------------------


def test_a_paused_pool_gets_nothing_until_its_reset():
    router = Router(pools(local=1, cloud=3), "hybrid")
    start(router, 0.0)
    router.pause("cloud", 100.0)
    decision = router.decide(40.0)
    assert decision.pool is None and decision.wait == pytest.approx(60.0)
    assert "cloud paused until its rate limit resets (60s)" in decision.reason
    router.pause("cloud", 70.0)  # an earlier reset never shortens the pause
    assert router.decide(99.0).pool is None
    assert start(router, 100.0) == "cloud"


def test_a_paused_local_pool_spills_to_cloud():
    router = Router(pools(local=4, cloud=1), "hybrid")
    router.pause("local", 30.0)
    decision = router.decide(0.0)
    assert decision.pool == "cloud" and "local paused until its rate limit resets (30s)" in decision.reason


def test_a_rate_limit_on_an_agent_two_pools_share_pauses_both(tmp_path):
    data = orch_yaml("hybrid")
    data["pools"]["cloud"]["agent"] = "w"
    package = plan(tmp_path, "shared", [{"id": "t1", "prompt": "p"}], "hybrid")
    conductor = Conductor(MarkdownStore(tmp_path / "QUEUE.md"), parse_config(data), package)

    class HttpLikeAgent:
        on_rate_limit = None

    shared = HttpLikeAgent()

    class OneAgentRunner:
        def agent(self, name):
            return shared

    conductor.attach(OneAgentRunner())
    shared.on_rate_limit(30.0)
    assert all(pool.paused_until > 0 for pool in conductor.router.pools.values())


def test_a_command_agents_usage_limit_pauses_every_pool_using_it_without_using_up_the_attempt(tmp_path):
    """A coding-agent CLI that reports a usage limit: its pools pause, the step runs again after the reset."""
    reset = int(time.time()) + 2
    claude = fake_cli(tmp_path / "bin", "claude", {"when": {"call": 1}, "stdout": claude_limit(f"Claude AI usage limit "
                                                                                       f"reached|{reset}")},
                      {"write": {"out.txt": "hi\n"}, "stdout": claude_result()})  # fmt: skip
    argv = [str(claude), "-p", "--output-format", "json"]
    pools = {"local": {"agent": "w", "capacity": 1}, "cloud": {"agent": "w", "capacity": 1}}
    data = config({"kind": "claude", "argv": argv}, retry={"max_attempts": 1}, strategy="hybrid", pools=pools)
    job_repo(tmp_path, data)
    package = plan(tmp_path, "limited", [{"id": "t1", "prompt": "write out.txt"}], "hybrid")
    cfg = load_config(tmp_path)
    store = MarkdownStore(tmp_path / "QUEUE.md", policy=cfg.retry)
    dispatch(store, package)
    conductor = Conductor(store, cfg, package)
    run = Runner(store, cfg, tmp_path, RunOptions(job=package.job_id, grace=1.0), lambda line: None, conductor)
    conductor.attach(run)
    [outcome] = run.run()
    assert (outcome.attempt, outcome.state) == (1, "SUCCESS") and len(calls(claude)) == 2
    item = store.get(outcome.item_id)
    assert (item.status, item.attempts, item.note_list()) == (Status.DONE, 1, ["done:1"])
    assert all(pool.paused_until >= reset - 1 for pool in conductor.router.pools.values())
    log = package.log.read_text()
    assert "pool local paused for" in log and "pool cloud paused for" in log
    [result] = [json.loads(line) for line in package.results.read_text().splitlines()]
    assert (result["status"], result["attempts"]) == ("DONE", 1)


# --- the seed's strategy names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_name", "routing"),
    [("force_metal", "force_local"), ("hybrid_supervisor", "hybrid"), ("force_cloud", "force_cloud"),
     ("force_local", "force_local"), ("hybrid", "hybrid")],
)  # fmt: skip
def test_orch_yaml_accepts_the_seed_strategy_names(given_name, routing):
    assert parse_config(orch_yaml(given_name)).strategy == routing


def test_an_unknown_strategy_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="strategy: unknown strategy 'round_robin'"):
        parse_config(orch_yaml("round_robin"))


@pytest.mark.parametrize(("order_strategy", "routing"), [*STRATEGY_ALIASES.items(), ("force_cloud", "force_cloud")])
def test_the_conductor_routes_by_the_work_orders_strategy(tmp_path, order_strategy, routing):
    config = parse_config(orch_yaml("hybrid"))
    package = plan(tmp_path, "routing", [{"id": "t1", "prompt": "p"}], order_strategy)
    conductor = Conductor(MarkdownStore(tmp_path / "QUEUE.md"), config, package)
    assert (conductor.strategy, conductor.router.strategy) == (order_strategy, routing)
    route = conductor.route(0.0)
    assert route.pool == ("cloud" if routing == "force_cloud" else "local") and route.wait is None
    assert route.agent == config.pools[route.pool].agent


def test_the_conductor_logs_a_wait_decision_once_per_reason(tmp_path):
    config = parse_config(orch_yaml("force_metal"))
    package = plan(tmp_path, "waits", [{"id": "t1", "prompt": "p"}], "force_metal")
    conductor = Conductor(MarkdownStore(tmp_path / "QUEUE.md"), config, package)
    conductor.router.started("local", 0.0)
    conductor.router.started("local", 0.0)
    routes = [conductor.route(1.0) for _ in range(3)]
    assert all(route.pool is None and route.wait == 0.5 for route in routes)  # capacity: poll again soon
    lines = package.log.read_text().splitlines()
    assert len(lines) == 1 and "| DECISION        | force_local: wait (local full (2/2))" in lines[0]


def test_a_route_holds_its_place_in_the_pool_until_its_claim_finds_nothing(tmp_path):
    """Runner threads route and claim concurrently, so a route reserves its place (budget too) at once."""
    data = orch_yaml("force_local")
    data["pools"]["local"].update(capacity=1, requests_per_minute=1)
    package = plan(tmp_path, "held", [{"id": "t1", "prompt": "p"}], "force_local")
    conductor = Conductor(MarkdownStore(tmp_path / "QUEUE.md"), parse_config(data), package)
    first = conductor.route(5.0)
    assert first.pool == "local" and first.at == 5.0
    assert conductor.route(5.0).wait is not None  # the place is taken before any claim is made
    conductor.unclaimed(first)  # the claim found nothing: the place and the request come back
    local = conductor.router.pools["local"]
    assert (local.running, list(local.requests)) == (0, [])
    assert conductor.route(6.0).pool == "local"


def test_taking_back_a_start_frees_its_place_and_only_its_request():
    router = Router(pools(local=2, cloud=1, requests_per_minute=5), "force_cloud")
    router.started("cloud", 1.0)
    router.finished("cloud", 2.0)
    router.started("cloud", 3.0)
    router.unstarted("cloud", 3.0)
    cloud = router.pools["cloud"]
    assert (cloud.running, list(cloud.requests)) == (0, [1.0])
    router.unstarted("cloud", 9.0)  # nothing running, no such request: stays at zero
    assert (cloud.running, list(cloud.requests)) == (0, [1.0])


def test_a_strategy_with_no_pool_to_use_is_refused_before_the_run(tmp_path):
    data = orch_yaml("force_cloud")
    del data["pools"]["cloud"]
    package = plan(tmp_path, "nopool", [{"id": "t1", "prompt": "p"}], "force_cloud")
    with pytest.raises(ConfigError, match="force_cloud"):
        Conductor(MarkdownStore(tmp_path / "QUEUE.md"), parse_config(data), package)


# --- property: the counts stay within bounds ------------------------------------------------

budgets = st.one_of(st.none(), st.integers(min_value=1, max_value=6))
token_budgets = st.one_of(st.none(), st.integers(min_value=50, max_value=500))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.floats(min_value=0, max_value=90, allow_nan=False)),
        st.tuples(st.just("start")),
        st.tuples(st.just("finish"), st.sampled_from(["local", "cloud"]), st.integers(min_value=0, max_value=300)),
        st.tuples(st.just("pause"), st.sampled_from(["local", "cloud"]), st.floats(min_value=0, max_value=120)),
    ),
    max_size=80,
)


@given(
    st.sampled_from(["hybrid", "force_local", "force_cloud"]), st.integers(1, 3), st.integers(1, 3),
    budgets, token_budgets, operations,
)  # fmt: skip
def test_running_counts_stay_within_capacity_and_budgets(strategy, local, cloud, rpm, tpm, ops):
    router = Router(pools(local, cloud, requests_per_minute=rpm, tokens_per_minute=tpm), strategy)
    now, starts = 0.0, {"local": [], "cloud": []}
    allowed = {"force_local": {"local"}, "force_cloud": {"cloud"}}.get(strategy, {"local", "cloud"})
    for op in ops:
        if op[0] == "tick":
            now += op[1]
        elif op[0] == "start":
            decision = router.decide(now)
            if decision.pool is not None:
                assert decision.pool in allowed and router.pools[decision.pool].paused_until <= now
                router.started(decision.pool, now)
                starts[decision.pool].append(now)
            else:
                assert decision.reason and decision.wait >= 0
        elif op[0] == "finish":
            router.finished(op[1], now, op[2])  # may be a pool with nothing running: must stay at 0
        else:
            router.pause(op[1], now + op[2])
        for state in router.pools.values():
            assert 0 <= state.running <= state.config.capacity
        if rpm is not None:
            assert sum(1 for moment in starts["cloud"] if moment > now - WINDOW) <= rpm
