"""The selection policy: weighted, load-aware, each candidate once; keyed; best."""

from __future__ import annotations

import random
from collections import Counter

from hepai_server.gateway.catalog import Deployment
from hepai_server.gateway.routing import Occupancy, best, keyed, spread


def deployment(name: str, weight: float) -> Deployment:
    return Deployment(
        provider=name, base_url="http://x", upstream_model="m", headers={}, weight=weight
    )


def test_each_deployment_once_heavier_first_more_often() -> None:
    heavy, light = deployment("heavy", 3), deployment("light", 1)
    rng = random.Random(7)
    firsts = Counter()
    for _ in range(4000):
        order = spread([heavy, light], rng)
        assert sorted(d.provider for d in order) == ["heavy", "light"]
        firsts[order[0].provider] += 1
    share = firsts["heavy"] / 4000
    assert 0.70 < share < 0.80  # 3:1 weights put the heavy one first 75% of the time


def test_single_deployment_is_tried_once() -> None:
    only = deployment("only", 1)
    assert spread([only], random.Random()) == [only]


def test_deployment_repr_never_shows_the_provider_key() -> None:
    secret = Deployment(
        provider="p",
        base_url="http://x",
        upstream_model="m",
        headers={"authorization": "Bearer provider-secret"},
    )
    assert "provider-secret" not in repr(secret) and "provider-secret" not in str(secret)


def test_load_makes_a_busy_candidate_come_first_less_often() -> None:
    idle, busy = deployment("idle", 1), deployment("busy", 1)
    load = {"idle": 0.0, "busy": 3.0}
    rng = random.Random(11)
    firsts = Counter(
        spread([idle, busy], rng, lambda d: load[d.provider])[0].provider for _ in range(4000)
    )
    assert firsts["idle"] > 3 * firsts["busy"]


def test_priority_comes_before_weight_and_load() -> None:
    preferred = Deployment(
        provider="p", base_url="http://x", upstream_model="m", headers={}, weight=0.01, priority=0
    )
    heavy = Deployment(
        provider="h", base_url="http://x", upstream_model="m", headers={}, weight=100, priority=1
    )
    for _ in range(200):
        assert spread([heavy, preferred], random.Random(), lambda d: 50.0)[0] is preferred
    assert best([heavy, preferred], lambda d: 50.0 if d is preferred else 0.0) is preferred


def test_a_key_always_picks_the_same_candidate_and_moves_only_its_own() -> None:
    names = [f"w{n}" for n in range(5)]
    pool = [deployment(name, 1) for name in names]
    picks = {
        key: keyed(pool, key, lambda d: d.provider)[0].provider for key in map(str, range(200))
    }
    assert all(
        keyed(pool[::-1], k, lambda d: d.provider)[0].provider == p for k, p in picks.items()
    )
    without_w0 = [d for d in pool if d.provider != "w0"]
    for key, pick in picks.items():
        if pick != "w0":  # keys held elsewhere stay where they were
            assert keyed(without_w0, key, lambda d: d.provider)[0].provider == pick


def test_occupancy_counts_calls_in_flight_and_forgets_idle_workers() -> None:
    occupancy = Occupancy()
    with occupancy.holding("w"), occupancy.holding("w"):
        assert occupancy["w"] == 2
    assert occupancy["w"] == 0 and not occupancy._calls
