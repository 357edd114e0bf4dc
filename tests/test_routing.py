"""Deployment order: weighted, each deployment once."""

from __future__ import annotations

import random
from collections import Counter

from hepai_server.gateway.catalog import Deployment
from hepai_server.gateway.routing import attempt_order


def deployment(name: str, weight: float) -> Deployment:
    return Deployment(
        provider=name, base_url="http://x", upstream_model="m", headers={}, weight=weight
    )


def test_each_deployment_once_heavier_first_more_often() -> None:
    heavy, light = deployment("heavy", 3), deployment("light", 1)
    rng = random.Random(7)
    firsts = Counter()
    for _ in range(4000):
        order = attempt_order([heavy, light], rng)
        assert sorted(d.provider for d in order) == ["heavy", "light"]
        firsts[order[0].provider] += 1
    share = firsts["heavy"] / 4000
    assert 0.70 < share < 0.80  # 3:1 weights put the heavy one first 75% of the time


def test_single_deployment_is_tried_once() -> None:
    only = deployment("only", 1)
    assert attempt_order([only], random.Random()) == [only]


def test_deployment_repr_never_shows_the_provider_key() -> None:
    secret = Deployment(
        provider="p",
        base_url="http://x",
        upstream_model="m",
        headers={"authorization": "Bearer provider-secret"},
    )
    assert "provider-secret" not in repr(secret) and "provider-secret" not in str(secret)
