"""The order in which to try the deployments of one model: weighted random, then failover."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from hepai_server.gateway.catalog import Deployment
from hepai_server.gateway.registry import WorkerRoute


def attempt_order(deployments: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
    """Every deployment once, lowest priority first; within a priority, earlier ones more likely
    the heavier they weigh.

    Efraimidis-Spirakis: sorting by u**(1/w) draws a weighted permutation in one pass, so load
    spreads by weight and each failover goes to a deployment not tried yet.
    """
    if len(deployments) == 1:
        return list(deployments)
    return sorted(
        deployments,
        key=lambda d: (d.priority, -(rng.random() ** (1.0 / max(d.weight, 1e-6)))),
    )


def worker_order(
    routes: Sequence[WorkerRoute], rng: random.Random, inflight: Mapping[str, int]
) -> list[WorkerRoute]:
    """Workers of one model in the order to try them.

    Lowest ``priority`` first (0 is the most preferred); within a priority, a weighted draw
    (as above) scaled down by each worker's queue per unit of speed, counting the calls this
    process has in flight there, so short queues win more often.
    """

    def key(route: WorkerRoute) -> tuple[int, float]:
        queue = route.queue_length + inflight.get(route.worker_id, 0)
        draw = rng.random() ** (1.0 / max(route.weight, 1e-6))
        return (route.priority, -draw / (1.0 + queue / route.speed))

    return sorted(routes, key=key)
