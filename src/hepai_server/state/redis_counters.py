"""The limits' counters in Redis, shared by every replica: one Lua script settles and admits
(each admission atomic, on Redis's clock).

Calls are batched: every admission and settlement made while the previous batch is on its
way goes out in the next one, as one call of the script, so under load a replica makes one
round trip per batch rather than per request, and a settlement waits a little for an
admission to ride with. A call made while nothing is in flight goes at once: at concurrency 1
a request's settlement leaves with its answer, and Redis settles it while the client reads,
so the next admission carries only its own work.

Every key gets an expiry when it is made: ``<check key>:<window number>`` for windows (a
string counter); ``<check key>`` for concurrency (a sorted set of request ids, scored by when
their slot expires); for a budget ``<check key>`` (a hash of ``spent`` and ``reserved``) and
``<key>:r`` (its reservations, ``<request id>:<amount>`` scored by their expiry). Amounts
are integers below 2**53, which Redis's Lua numbers hold exactly (a budget of 9 million in the
currency, in nanos). Each ``redis.call`` costs about 2 µs of Redis's time here (more than
most commands themselves), so the script makes as few as it can."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson

from hepai_server.state.counters import Check, Decision
from hepai_server.state.resp import Connection, Script

#: One call of the script settles a batch of requests that ended, then admits a batch of new
#: ones: the client packs two arguments a batch rather than a dozen a request (packing is
#: most of what a call costs it).
#:
#: ARGV[1]: a JSON array of settlements, each [request id, admission time (ms), checks], each
#: check [kind, key, amount reserved, actual, span (ms)]; per settlement, what each budget
#: check's period has spent after it (0 for the other checks).
#:
#: ARGV[2]: a JSON array of admissions, each [request id, reservation ttl (ms), checks], each
#: check [kind, key, limit, amount, span (ms), seed or false]; each admission all or nothing
#: by itself.
#:
#: The keys travel in the JSON, not in KEYS: a standalone Redis (or a primary with replicas)
#: allows that, and an admission touching a user's, a model's and a budget's counters at once
#: could not run on Redis Cluster anyway.
STEP = """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- A budget reservation's member of <key>:r: admitted, settled and swept by this name.
local function reservation(id, amount) return string.format('%s:%d', id, amount) end

local function admit(id, ttl, checks)
  local used = {}
  local counted = {}
  local function refuse(i, wait, unseeded)
    for _, c in ipairs(counted) do redis.call('DECRBY', c[1], c[2]) end
    return {0, i, wait, unseeded, used, now}
  end
  for i, check in ipairs(checks) do
    local kind, key, limit, amount, span, seed = unpack(check)
    if kind == 'w' then
      -- Counted at once, and taken back if any check refuses: a refusal is rare, and this
      -- is one command a window rather than two.
      local window = math.floor(now / span)
      local wkey = key .. ':' .. window
      local count = redis.call('INCRBY', wkey, amount)
      if count == amount then redis.call('PEXPIRE', wkey, span * 2) end
      counted[#counted + 1] = {wkey, amount}
      local reset = (window + 1) * span - now
      if count > limit then return refuse(i, reset, 0) end
      used[#used + 1] = count
      used[#used + 1] = reset
    elseif kind == 'c' then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
      local live = redis.call('ZCARD', key)
      if live + 1 > limit then return refuse(i, 1000, 0) end
      used[#used + 1] = live + 1
      used[#used + 1] = 0
    else
      if seed and redis.call('HSETNX', key, 'spent', seed) == 1 then
        redis.call('PEXPIRE', key, span)
      end
      local spent = redis.call('HGET', key, 'spent')
      if not spent then return refuse(i, 0, 1) end
      spent = tonumber(spent)
      local expired = redis.call('ZRANGEBYSCORE', key .. ':r', '-inf', now)
      if #expired > 0 then
        local gone = 0
        for _, member in ipairs(expired) do
          gone = gone + (tonumber(string.match(member, ':(%d+)$')) or 0)  -- its amount
        end
        redis.call('HINCRBY', key, 'reserved', -gone)
        redis.call('ZREMRANGEBYSCORE', key .. ':r', '-inf', now)
      end
      local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
      if spent >= limit or spent + reserved + amount > limit then
        return refuse(i, span, 0)
      end
      used[#used + 1] = spent + reserved + amount
      used[#used + 1] = 0
    end
  end
  for _, check in ipairs(checks) do
    local kind, key, _, amount, span = unpack(check)
    if kind == 'c' then
      redis.call('ZADD', key, now + ttl, id)
      redis.call('PEXPIRE', key, ttl * 2)
    elseif kind == 'b' then
      redis.call('HINCRBY', key, 'reserved', amount)
      redis.call('ZADD', key .. ':r', now + ttl, reservation(id, amount))
      redis.call('PEXPIRE', key .. ':r', span)
    end
  end
  return {1, 0, 0, 0, used, now}
end

local function settle(id, at, checks)
  local spent = {}
  for i, check in ipairs(checks) do
    local kind, key, amount, actual, span = unpack(check)
    spent[i] = 0
    if kind == 'w' then
      local wkey = key .. ':' .. math.floor(at / span)
      if actual ~= amount and redis.call('EXISTS', wkey) == 1 then
        local count = redis.call('INCRBY', wkey, actual - amount)
        if count < 0 then redis.call('SET', wkey, 0, 'KEEPTTL') end
      end
    elseif kind == 'c' then
      redis.call('ZREM', key, id)
    else
      if redis.call('ZREM', key .. ':r', reservation(id, amount)) == 1 then
        redis.call('HINCRBY', key, 'reserved', -amount)
      end
      if redis.call('HEXISTS', key, 'spent') == 1 then
        spent[i] = redis.call('HINCRBY', key, 'spent', actual)
      end
    end
  end
  return spent
end

local settled = {}
for i, call in ipairs(cjson.decode(ARGV[1])) do
  settled[i] = settle(call[1], call[2], call[3])
end
local admitted = {}
for i, call in ipairs(cjson.decode(ARGV[2])) do
  admitted[i] = admit(call[1], call[2], call[3])
end
return {settled, admitted}
"""

_KINDS = {"window": "w", "concurrency": "c", "budget": "b"}


#: How long a settlement made while a batch was in flight waits for an admission to ride with
#: (seconds). Under load one comes within it, and the two share one round trip; a settlement
#: that waits holds its reservation (and concurrency slot) that much longer, which errs on the
#: side of refusing.
LINGER = 0.002


class RedisCounters:
    """Counters every replica shares, in the Redis at ``url``."""

    def __init__(self, url: str, *, timeout: float = 0.5, linger: float = LINGER) -> None:
        self._batches = Batches(Connection(url, timeout=timeout), Script(STEP), linger=linger)

    async def admit(
        self, request_id: str, checks: Sequence[Check], *, reservation_ttl: float
    ) -> Decision:
        call = [
            request_id,
            int(reservation_ttl * 1000),
            [
                [
                    _KINDS[check.kind],
                    check.key,
                    check.limit,
                    check.amount,
                    max(int(check.span * 1000), 1),
                    False if check.seed is None else check.seed,
                ]
                for check in checks
            ],
        ]
        admitted, failed, wait, unseeded, flat, now = await self._batches.admit(call)
        used = tuple((int(flat[i]), int(flat[i + 1]) / 1000) for i in range(0, len(flat), 2))
        at = int(now) / 1000
        if admitted:
            return Decision(True, used=used, at=at)
        return Decision(False, int(failed) - 1, int(wait) / 1000, used, bool(unseeded), at)

    def settle(
        self, request_id: str, checks: Sequence[Check], actuals: Sequence[int], *, at: float
    ) -> asyncio.Future[list[int]]:
        """A future, not a coroutine: the limiter waits for it with a callback, not a task."""
        call = [
            request_id,
            int(at * 1000),
            [
                [
                    _KINDS[check.kind],
                    check.key,
                    check.amount,
                    actual,
                    max(int(check.span * 1000), 1),
                ]
                for check, actual in zip(checks, actuals, strict=True)
            ],
        ]
        return self._batches.settle(call)

    async def close(self) -> None:
        await self._batches.close()


class Batches:
    """Calls of the script, sent in batches: one batch in flight at a time, and every call
    made meanwhile waiting to go in the next. A call goes at once when nothing is in flight;
    settlements that waited for a batch then wait up to ``linger`` for an admission."""

    def __init__(self, connection: Connection, script: Script, *, linger: float) -> None:
        self._connection = connection
        self._script = script
        self._linger = linger
        self._admits: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self._settles: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None
        #: Set while settlements wait for an admission: the admission wakes the sender.
        self._wake: asyncio.Future[None] | None = None
        self._closing = False

    def admit(self, call: list[Any]) -> asyncio.Future[Any]:
        future = self._queue(self._admits, call)
        _wake(self._wake)
        return future

    def settle(self, call: list[Any]) -> asyncio.Future[Any]:
        return self._queue(self._settles, call)

    def _queue(
        self, queue: list[tuple[list[Any], asyncio.Future[Any]]], call: list[Any]
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue.append((call, future))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())
        return future

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        # Nothing was in flight: the first batch goes at once, settlements alone included (at
        # concurrency 1, Redis settles the request while its client reads the answer).
        first = True
        try:
            while self._admits or self._settles:
                if not self._admits and not first and not self._closing:
                    wake = self._wake = loop.create_future()
                    timer = loop.call_later(self._linger, _wake, wake)
                    await wake
                    timer.cancel()
                    self._wake = None
                first = False
                admits, self._admits = self._admits, []
                settles, self._settles = self._settles, []
                try:
                    payload = (
                        orjson.dumps([call for call, _ in settles]),
                        orjson.dumps([call for call, _ in admits]),
                    )
                    settled, admitted = await self._connection.script(self._script, *payload)
                except Exception as exc:  # Redis is away: every call of the batch fails
                    settled, admitted = [exc] * len(settles), [exc] * len(admits)
                _answer(settles, settled)
                _answer(admits, admitted)
        finally:
            self._sender = None

    async def close(self) -> None:
        self._closing = True
        _wake(self._wake)
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)
        await self._connection.close()


def _wake(future: asyncio.Future[None] | None) -> None:
    """End a settlement's linger (an admission came, the linger ran out, or closing)."""
    if future is not None and not future.done():
        future.set_result(None)


def _answer(batch: list[tuple[list[Any], asyncio.Future[Any]]], results: list[Any]) -> None:
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():  # its caller was cancelled
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
