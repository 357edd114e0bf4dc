"""The order in which to try the deployments of one model: weighted random, then failover."""

from __future__ import annotations

import random
from collections.abc import Sequence

from hepai_server.gateway.catalog import Deployment


def attempt_order(deployments: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
    """Every deployment once, earlier ones more likely the heavier they weigh.

    Efraimidis-Spirakis: sorting by u**(1/w) draws a weighted permutation in one pass, so load
    spreads by weight and each failover goes to a deployment not tried yet.
    """
    if len(deployments) == 1:
        return list(deployments)
    return sorted(deployments, key=lambda d: rng.random() ** (1.0 / d.weight), reverse=True)
