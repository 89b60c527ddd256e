"""A token bucket kept in Redis, so every worker process using the same key shares one request budget.

Vendors rate-limit per account/user, not per process: N RQ workers syncing one org must pace together.
The bucket (tokens, last refill time) lives in a Redis hash and is read-refilled-spent in one Lua script,
which Redis runs atomically -- no lost updates between workers. Key names come from the caller and must
not contain secrets (the Cliniko client hashes its API key).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

# KEYS[1] bucket hash; ARGV: now (s), refill rate (tokens/s), capacity, TTL (ms).
# Returns the wait in seconds as a string (Redis would truncate a Lua number to an integer): "0" = granted.
TOKEN_BUCKET_LUA = """
local now, rate, capacity, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil or ts == nil then
  tokens, ts = capacity, now
end
-- Workers' clocks differ a little: never refill for negative time, never move the stamp backwards.
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
ts = math.max(ts, now)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], ttl)
return tostring(wait)
"""


class RedisRateLimiter:
    """``acquire()`` blocks until a token is free; ``try_acquire()`` returns 0 (granted) or the wait in seconds.

    In any 60 s window at most ``burst + rate_per_minute`` tokens are granted. The default burst is small
    (1/20 of the rate) so a busy org paces evenly instead of bursting into the vendor's 429.
    """

    def __init__(self, redis_client: Any, key: str, *, rate_per_minute: int, burst: int | None = None,
                 sleep: Callable[[float], Any] = time.sleep, clock: Callable[[], float] = time.time) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        if burst is not None and burst < 1:
            raise ValueError("burst must be at least 1")
        self.key = key
        self.rate_per_minute = rate_per_minute
        self.burst = burst if burst is not None else max(1, rate_per_minute // 20)
        self._rate = rate_per_minute / 60.0  # tokens per second
        # A bucket idle long enough to refill completely is the same as no bucket: let Redis drop it then.
        self._ttl_ms = math.ceil(self.burst / self._rate * 1000) + 1000
        self._script = redis_client.register_script(TOKEN_BUCKET_LUA)
        self._sleep, self._clock = sleep, clock

    def __repr__(self) -> str:
        return f"<RedisRateLimiter key={self.key!r} rate_per_minute={self.rate_per_minute} burst={self.burst}>"

    def try_acquire(self) -> float:
        wait = self._script(keys=[self.key], args=[repr(float(self._clock())), repr(self._rate), self.burst,
                                                   self._ttl_ms])
        return max(0.0, float(wait))

    def acquire(self) -> None:
        # A refused try spends nothing, so after sleeping we must try again (another worker may win the race).
        while (wait := self.try_acquire()) > 0:
            self._sleep(wait)
