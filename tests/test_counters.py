"""The limits' counters, in process and in a real Redis, held to the same contract: admission
is all or nothing, windows count at their boundary, concurrency slots and budget reservations
are freed on settlement or when they expire, and budgets settle with what was actually spent."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
import uvloop

from hepai_server.state.counters import Check, Counters, MemoryCounters
from hepai_server.state.redis_counters import RedisCounters
from hepai_server.state.resp import Address
from tests.redisserver import RedisServer, redis_server
from tests.stack import free_port

T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.e2e)])
def counters(request: pytest.FixtureRequest, unique) -> tuple[Callable[[], Counters], str]:
    """How to make each backend (inside the test's event loop), and a key prefix of its own."""
    if request.param == "memory":
        return MemoryCounters, unique("t")
    server: RedisServer = request.getfixturevalue("redis")
    return (lambda: RedisCounters(server.url)), unique("t")


def run(make: Callable[[], Counters], scenario: Callable[[Counters], Awaitable[T]]) -> T:
    async def main() -> T:
        backend = make()
        try:
            return await scenario(backend)
        finally:
            await backend.close()

    # The gateway's loop: its transports are not asyncio's classes.
    return uvloop.run(main())


def test_a_window_admits_up_to_its_limit_and_not_one_more(counters) -> None:
    make, prefix = counters
    rpm = Check("window", f"{prefix}:rpm", limit=3, amount=1, span=60)

    async def scenario(backend: Counters) -> list[bool]:
        return [
            (await backend.admit(f"r{n}", [rpm], reservation_ttl=30)).admitted for n in range(4)
        ]

    assert run(make, scenario) == [True, True, True, False]


def test_refusal_touches_no_other_counter(counters) -> None:
    make, prefix = counters
    loose = Check("window", f"{prefix}:loose", limit=100, amount=1, span=60)
    tight = Check("window", f"{prefix}:tight", limit=1, amount=1, span=60)

    async def scenario(backend: Counters):
        first = await backend.admit("a", [loose, tight], reservation_ttl=30)
        second = await backend.admit("b", [loose, tight], reservation_ttl=30)
        third = await backend.admit("c", [loose], reservation_ttl=30)
        return first, second, third

    first, second, third = run(make, scenario)
    assert first.admitted and not second.admitted and second.failed == 1
    assert second.retry_after > 0
    assert third.used[0][0] == 2, "the refused request reserved nothing on the loose window"


def test_tokens_per_minute_settle_to_the_actual(counters) -> None:
    make, prefix = counters
    tpm = Check("window", f"{prefix}:tpm", limit=1000, amount=800, span=60)

    async def scenario(backend: Counters):
        first = await backend.admit("a", [tpm], reservation_ttl=30)
        assert not (await backend.admit("b", [tpm], reservation_ttl=30)).admitted
        await backend.settle("a", [tpm], [100], at=first.at)
        return await backend.admit("c", [tpm], reservation_ttl=30)

    assert run(make, scenario).admitted, "settled at 100 actual tokens, 800 more fit"


def test_concurrency_frees_a_slot_on_settlement(counters) -> None:
    make, prefix = counters
    slot = Check("concurrency", f"{prefix}:conc", limit=2, amount=1, span=0)

    async def scenario(backend: Counters):
        a = await backend.admit("a", [slot], reservation_ttl=30)
        b = await backend.admit("b", [slot], reservation_ttl=30)
        c = await backend.admit("c", [slot], reservation_ttl=30)
        await backend.settle("a", [slot], [1], at=a.at)
        d = await backend.admit("d", [slot], reservation_ttl=30)
        return a.admitted, b.admitted, c.admitted, d.admitted

    assert run(make, scenario) == (True, True, False, True)


def test_a_budget_needs_its_seed_then_counts_spend_and_reservations(counters) -> None:
    make, prefix = counters
    key = f"{prefix}:budget"

    def budget(amount: int, seed: int | None = None) -> Check:
        return Check("budget", key, limit=100, amount=amount, span=3600, seed=seed)

    async def scenario(backend: Counters):
        unseeded = await backend.admit("a", [budget(10)], reservation_ttl=30)
        assert not unseeded.admitted and unseeded.unseeded
        a = await backend.admit("a", [budget(30, seed=50)], reservation_ttl=30)
        assert a.admitted
        assert not (await backend.admit("b", [budget(30)], reservation_ttl=30)).admitted
        spent = await backend.settle("a", [budget(30)], [20], at=a.at)
        assert spent == [70]
        b = await backend.admit("b", [budget(30)], reservation_ttl=30)
        assert b.admitted
        await backend.settle("b", [budget(30)], [40], at=b.at)
        # Spent 110 > 100: exhausted, even for a request estimated at nothing.
        return await backend.admit("c", [budget(0)], reservation_ttl=30)

    assert not run(make, scenario).admitted


def test_a_burst_against_a_budget_overshoots_by_at_most_one_request(counters) -> None:
    """Fifty requests at once, each estimated at what it will cost, against a budget that
    allows ten: ten are admitted, none more."""
    make, prefix = counters
    check = Check("budget", f"{prefix}:burst", limit=100, amount=10, span=3600, seed=0)

    async def one(backend: Counters, n: int) -> bool:
        decision = await backend.admit(f"r{n}", [check], reservation_ttl=30)
        if decision.admitted:
            await asyncio.sleep(0.01)
            await backend.settle(f"r{n}", [check], [10], at=decision.at)
        return decision.admitted

    async def burst(backend: Counters) -> list[bool]:
        return list(await asyncio.gather(*(one(backend, n) for n in range(50))))

    assert sum(run(make, burst)) == 10


def test_reservations_of_a_crashed_request_expire(unique) -> None:
    clock = Clock()
    make = lambda: MemoryCounters(clock)  # noqa: E731
    slot = Check("concurrency", unique("c"), limit=1, amount=1, span=0)
    budget = Check("budget", unique("b"), limit=10, amount=10, span=3600, seed=0)

    async def scenario(backend: Counters):
        assert (await backend.admit("dead", [slot, budget], reservation_ttl=30)).admitted
        assert not (await backend.admit("next", [slot], reservation_ttl=30)).admitted
        clock.now += 31  # the dead request never settles
        return await backend.admit("next", [slot, budget], reservation_ttl=30)

    assert run(make, scenario).admitted


@pytest.mark.e2e
def test_in_redis_a_crashed_requests_budget_reservation_expires(redis: RedisServer, unique) -> None:
    """On Redis's clock: a reservation nobody settles is released when it expires, by its
    own amount, and the budget admits again."""
    budget = Check("budget", unique("b"), limit=10, amount=7, span=3600, seed=0)

    async def scenario(backend: Counters) -> tuple[bool, bool, tuple[tuple[int, float], ...]]:
        dead = (await backend.admit("dead", [budget], reservation_ttl=0.2)).admitted
        refused = (await backend.admit("next", [budget], reservation_ttl=0.2)).admitted
        await asyncio.sleep(0.3)
        return dead, refused, (await backend.admit("next", [budget], reservation_ttl=30)).used

    dead, refused, used = run(lambda: RedisCounters(redis.url), scenario)
    assert dead and not refused
    assert used == ((7, 0.0),), "spent 0, reserved only by this request"


def test_a_window_resets_at_its_boundary(unique) -> None:
    clock = Clock()
    clock.now = 600.0  # the start of a minute
    make = lambda: MemoryCounters(clock)  # noqa: E731
    rpm = Check("window", unique("w"), limit=1, amount=1, span=60)

    async def scenario(backend: Counters):
        assert (await backend.admit("a", [rpm], reservation_ttl=30)).admitted
        clock.now = 659.9
        refused = await backend.admit("b", [rpm], reservation_ttl=30)
        assert not refused.admitted and refused.retry_after == pytest.approx(0.1)
        clock.now = 660.0
        return await backend.admit("c", [rpm], reservation_ttl=30)

    assert run(make, scenario).admitted


def test_calls_made_together_while_redis_is_away_each_fail_at_once(unique) -> None:
    """A batch sent to a Redis that is not there fails every call in it (the limiter then
    refuses or falls back), and none of them waits for an answer that never comes."""
    check = Check("window", unique("w"), limit=10, amount=1, span=60)

    async def scenario(backend: Counters) -> list[BaseException | object]:
        calls = (backend.admit(f"r{n}", [check], reservation_ttl=30) for n in range(5))
        async with asyncio.timeout(10):
            return list(await asyncio.gather(*calls, return_exceptions=True))

    port = free_port()
    results = run(lambda: RedisCounters(f"redis://127.0.0.1:{port}/0"), scenario)
    assert len(results) == 5 and all(isinstance(r, ConnectionError) for r in results), results


@pytest.mark.e2e
def test_a_burst_goes_to_redis_in_batches_and_each_call_gets_its_own_answer(
    redis: RedisServer, unique
) -> None:
    """Two hundred admissions at once against a limit of 150: exactly 150 are admitted, and
    each decision is the one for its own request (its used count is distinct)."""
    check = Check("window", unique("w"), limit=150, amount=1, span=60)

    async def scenario(backend: Counters) -> list[tuple[bool, int]]:
        decisions = await asyncio.gather(
            *(backend.admit(f"r{n}", [check], reservation_ttl=30) for n in range(200))
        )
        return [(d.admitted, d.used[0][0] if d.admitted else -1) for d in decisions]

    results = run(lambda: RedisCounters(redis.url), scenario)
    admitted = [used for ok, used in results if ok]
    assert len(admitted) == 150 and sorted(admitted) == list(range(1, 151))


def evalsha_calls(redis: RedisServer) -> Callable[[], int]:
    client = redis.client()
    return lambda: int(client.info("commandstats")["cmdstat_evalsha"]["calls"])


@pytest.mark.e2e
def test_at_concurrency_one_a_settlement_goes_at_once(redis: RedisServer, unique) -> None:
    """Nothing in flight: a settlement does not wait for the next admission (however long its
    linger) but goes at once, and Redis settles it while the client reads its answer."""
    check = Check("window", unique("w"), limit=1000, amount=1, span=60)
    script_calls = evalsha_calls(redis)

    async def scenario(backend: Counters) -> None:
        for n in range(5):
            decision = await backend.admit(f"r{n}", [check], reservation_ttl=30)
            assert decision.admitted
            pending = backend.settle(f"r{n}", [check], [1], at=decision.at)
            assert await asyncio.wait_for(pending, 1) == [0]

    run(lambda: RedisCounters(redis.url), lambda b: b.admit("warm", [], reservation_ttl=1))
    before = script_calls()
    run(lambda: RedisCounters(redis.url, linger=30), scenario)
    assert script_calls() - before == 10


@pytest.mark.e2e
def test_a_settlement_made_while_a_call_is_in_flight_rides_with_the_next_admission(
    redis: RedisServer, unique
) -> None:
    """Under load a batch is nearly always in flight: the settlements made meanwhile wait
    for an admission to go with (up to their linger), one round trip for both."""
    check = Check("window", unique("w"), limit=1000, amount=1, span=60)
    script_calls = evalsha_calls(redis)

    async def scenario(backend: Counters) -> None:
        first = asyncio.ensure_future(backend.admit("a", [check], reservation_ttl=30))
        for _ in range(3):
            await asyncio.sleep(0)  # the admission goes, and is in flight
        pending = backend.settle("a", [check], [1], at=0)
        assert (await first).admitted
        await asyncio.sleep(0.01)
        assert not pending.done(), "it waits for an admission"
        assert (await backend.admit("b", [check], reservation_ttl=30)).admitted
        assert await pending == [0]

    run(lambda: RedisCounters(redis.url), lambda b: b.admit("warm", [], reservation_ttl=1))
    before = script_calls()
    run(lambda: RedisCounters(redis.url, linger=5), scenario)
    assert script_calls() - before == 2


@pytest.mark.e2e
def test_every_key_the_counters_write_expires(redis: RedisServer, unique) -> None:
    """Windows, concurrency slots and a budget's counters, admitted, settled and refused:
    every key left in Redis has an expiry (none outlives its window or period)."""
    prefix = unique("x")
    checks = [
        Check("window", f"{prefix}:rpm", limit=10, amount=1, span=60),
        Check("window", f"{prefix}:tpm", limit=10_000, amount=500, span=60),
        Check("concurrency", f"{prefix}:c", limit=5, amount=1, span=0),
        Check("budget", f"{prefix}:b", limit=10**6, amount=700, span=3600, seed=0),
    ]

    async def scenario(backend: Counters) -> None:
        decision = await backend.admit("a", checks, reservation_ttl=30)
        assert decision.admitted
        assert (await backend.admit("b", checks, reservation_ttl=30)).admitted  # in flight
        await backend.settle("a", checks, [1, 200, 1, 300], at=decision.at)
        tight = [*checks, Check("window", f"{prefix}:tight", limit=0, amount=1, span=60)]
        assert not (await backend.admit("c", tight, reservation_ttl=30)).admitted

    run(lambda: RedisCounters(redis.url), scenario)
    client = redis.client()
    keys = list(client.scan_iter(f"{prefix}:*"))
    assert len(keys) >= 5, keys
    assert {key: client.pttl(key) > 0 for key in keys} == dict.fromkeys(keys, True)


@pytest.mark.e2e
def test_counters_load_their_script_again_into_a_redis_that_forgot_it(
    redis: RedisServer, unique
) -> None:
    """A restarted or replaced Redis knows no scripts: the next call loads it and succeeds."""
    check = Check("window", unique("w"), limit=10, amount=1, span=60)

    async def scenario(backend: Counters) -> list[int]:
        first = await backend.admit("a", [check], reservation_ttl=30)
        redis.client().script_flush()
        second = await backend.admit("b", [check], reservation_ttl=30)
        return [first.used[0][0], second.used[0][0]]

    assert run(lambda: RedisCounters(redis.url), scenario) == [1, 2]


def test_a_redis_that_accepts_but_never_answers_fails_the_call_within_its_timeout(
    unique,
) -> None:
    """No call hangs on a Redis that stopped answering: it fails after the timeout, and so
    does every call waiting behind it."""
    check = Check("window", unique("w"), limit=10, amount=1, span=60)
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]

    async def scenario(backend: Counters) -> tuple[list[BaseException | object], float]:
        started = time.monotonic()
        calls = (backend.admit(f"r{n}", [check], reservation_ttl=30) for n in range(3))
        results = list(await asyncio.gather(*calls, return_exceptions=True))
        return results, time.monotonic() - started

    try:
        results, took = run(
            lambda: RedisCounters(f"redis://127.0.0.1:{port}/0", timeout=0.3), scenario
        )
    finally:
        silent.close()
    assert all(isinstance(r, ConnectionError) for r in results), results
    assert took < 5


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://127.0.0.1:6380/2", Address("127.0.0.1", 6380, db=2)),
        ("redis://:p%40ss@cache", Address("cache", password="p@ss")),
        (
            "rediss://limits:s3cret@cache:6390/0",
            Address("cache", 6390, None, True, "limits", "s3cret"),
        ),
        ("unix:///run/redis.sock?db=3", Address(socket="/run/redis.sock", db=3)),
        ("redis://cache/4?db=5", Address("cache", db=5)),
    ],
)
def test_redis_urls_are_read_as_redis_py_reads_them(url: str, address: Address) -> None:
    assert Address.parse(url) == address


def test_a_url_that_is_not_redis_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Redis URL"):
        Address.parse("http://cache:6379")
