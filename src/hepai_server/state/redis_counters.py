"""The limits' counters in Redis, shared by every replica: one Lua script per admission (one
round trip, atomic, on Redis's clock) and one per settlement.

Keys (every one expires): ``<check key>:<window number>`` for windows (a string counter);
``<check key>`` for concurrency (a sorted set of request ids, scored by when their slot
expires); for a budget ``<check key>`` (a hash of ``spent`` and ``reserved``), ``<key>:r``
(reservations by expiry) and ``<key>:a`` (their amounts). Amounts are integers below 2**53,
which Redis's Lua numbers hold exactly (a budget of 9 million in the currency, in nanos).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as redis

from hepai_server.state.counters import Check, Decision

#: ARGV: request id, reservation ttl (ms), then per check: kind, limit, amount, span (ms), seed.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, ttl = ARGV[1], tonumber(ARGV[2])
local n = #KEYS
local used = {}
for i = 1, n do
  local b = 2 + (i - 1) * 5
  local kind, limit, amount = ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local span, seed = tonumber(ARGV[b + 4]), ARGV[b + 5]
  local key = KEYS[i]
  if kind == 'w' then
    local window = math.floor(now / span)
    local count = tonumber(redis.call('GET', key .. ':' .. window) or '0')
    local reset = (window + 1) * span - now
    if count + amount > limit then return {0, i, reset, 0, used, now} end
    used[#used + 1] = count + amount
    used[#used + 1] = reset
  elseif kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local live = redis.call('ZCARD', key)
    if live + 1 > limit then return {0, i, 1000, 0, used, now} end
    used[#used + 1] = live + 1
    used[#used + 1] = 0
  else
    if seed ~= '' then redis.call('HSETNX', key, 'spent', seed) end
    local spent = redis.call('HGET', key, 'spent')
    if not spent then return {0, i, 0, 1, used, now} end
    spent = tonumber(spent)
    local expired = redis.call('ZRANGEBYSCORE', key .. ':r', '-inf', now)
    for _, rid in ipairs(expired) do
      local a = tonumber(redis.call('HGET', key .. ':a', rid) or '0')
      redis.call('HINCRBY', key, 'reserved', -a)
      redis.call('HDEL', key .. ':a', rid)
    end
    if #expired > 0 then redis.call('ZREMRANGEBYSCORE', key .. ':r', '-inf', now) end
    local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
    if spent >= limit or spent + reserved + amount > limit then
      return {0, i, span, 0, used, now}
    end
    used[#used + 1] = spent + reserved + amount
    used[#used + 1] = 0
  end
end
for i = 1, n do
  local b = 2 + (i - 1) * 5
  local kind, amount, span = ARGV[b + 1], tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local key = KEYS[i]
  if kind == 'w' then
    local wkey = key .. ':' .. math.floor(now / span)
    redis.call('INCRBY', wkey, amount)
    redis.call('PEXPIRE', wkey, span * 2)
  elseif kind == 'c' then
    redis.call('ZADD', key, now + ttl, id)
    redis.call('PEXPIRE', key, ttl * 2)
  else
    redis.call('HINCRBY', key, 'reserved', amount)
    redis.call('HSET', key .. ':a', id, amount)
    redis.call('ZADD', key .. ':r', now + ttl, id)
    for _, k in ipairs({key, key .. ':a', key .. ':r'}) do redis.call('PEXPIRE', k, span) end
  end
end
return {1, 0, 0, 0, used, now}
"""

#: ARGV: request id, admission time (ms), then per check: kind, amount reserved, actual, span.
SETTLE = """
local id, at = ARGV[1], tonumber(ARGV[2])
local spent = {}
for i = 1, #KEYS do
  local b = 2 + (i - 1) * 4
  local kind, amount, actual = ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local span = tonumber(ARGV[b + 4])
  local key = KEYS[i]
  spent[i] = 0
  if kind == 'w' then
    local wkey = key .. ':' .. math.floor(at / span)
    if redis.call('EXISTS', wkey) == 1 and actual ~= amount then
      local count = redis.call('INCRBY', wkey, actual - amount)
      if count < 0 then redis.call('SET', wkey, 0, 'KEEPTTL') end
    end
  elseif kind == 'c' then
    redis.call('ZREM', key, id)
  else
    local a = redis.call('HGET', key .. ':a', id)
    if a then
      redis.call('HINCRBY', key, 'reserved', -tonumber(a))
      redis.call('HDEL', key .. ':a', id)
      redis.call('ZREM', key .. ':r', id)
    end
    if redis.call('HEXISTS', key, 'spent') == 1 then
      spent[i] = redis.call('HINCRBY', key, 'spent', actual)
    end
  end
end
return spent
"""

_KINDS = {"window": "w", "concurrency": "c", "budget": "b"}


class RedisCounters:
    """Counters every replica shares, in the Redis at ``url``."""

    def __init__(self, url: str, *, timeout: float = 0.5) -> None:
        self.client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._admit = self.client.register_script(ADMIT)
        self._settle = self.client.register_script(SETTLE)

    async def admit(
        self, request_id: str, checks: Sequence[Check], *, reservation_ttl: float
    ) -> Decision:
        args: list[str | int] = [request_id, int(reservation_ttl * 1000)]
        for check in checks:
            span = max(int(check.span * 1000), 1)
            seed = "" if check.seed is None else str(check.seed)
            args += [_KINDS[check.kind], check.limit, check.amount, span, seed]
        admitted, failed, wait, unseeded, flat, now = await self._admit(
            keys=[check.key for check in checks], args=args
        )
        used = tuple((int(flat[i]), int(flat[i + 1]) / 1000) for i in range(0, len(flat), 2))
        at = int(now) / 1000
        if admitted:
            return Decision(True, used=used, at=at)
        return Decision(False, int(failed) - 1, int(wait) / 1000, used, bool(unseeded), at)

    async def settle(
        self, request_id: str, checks: Sequence[Check], actuals: Sequence[int], *, at: float
    ) -> list[int]:
        args: list[str | int] = [request_id, int(at * 1000)]
        for check, actual in zip(checks, actuals, strict=True):
            args += [_KINDS[check.kind], check.amount, actual, max(int(check.span * 1000), 1)]
        spent = await self._settle(keys=[check.key for check in checks], args=args)
        return [int(value) for value in spent]

    async def close(self) -> None:
        await self.client.aclose()
