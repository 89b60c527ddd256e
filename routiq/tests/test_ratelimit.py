"""RedisRateLimiter against the configured Redis (REDIS_URL; keys under a unique prefix), with a fake clock."""

import uuid

import pytest
import redis
from django.conf import settings

from routiq.ratelimit import RedisRateLimiter


class FakeTime:
    def __init__(self, now: float = 1_714_550_400.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = f"test:ratelimit:{uuid.uuid4().hex}"
    client.test_prefix = prefix
    yield client
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def clock():
    return FakeTime()


def limiter(redis_client, clock, suffix="a", **kwargs):
    kwargs.setdefault("rate_per_minute", 60)
    kwargs.setdefault("burst", 3)
    return RedisRateLimiter(redis_client, f"{redis_client.test_prefix}:{suffix}", clock=clock, sleep=clock.sleep,
                            **kwargs)


def test_two_instances_on_one_key_share_the_budget(redis_client, clock):
    first, second = limiter(redis_client, clock), limiter(redis_client, clock)

    granted = [first.try_acquire(), second.try_acquire(), first.try_acquire()]

    assert granted == [0, 0, 0]
    assert second.try_acquire() == pytest.approx(1.0)
    assert first.try_acquire() == pytest.approx(1.0)  # a refused try spends nothing


def test_bucket_refills_with_time_up_to_the_burst(redis_client, clock):
    bucket = limiter(redis_client, clock)
    for _ in range(3):
        assert bucket.try_acquire() == 0

    clock.now += 0.5
    assert bucket.try_acquire() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.try_acquire() == 0

    clock.now += 3600  # a long idle refills to the burst, no more
    assert [bucket.try_acquire() for _ in range(4)][:3] == [0, 0, 0]
    assert bucket.try_acquire() > 0


def test_different_keys_are_independent(redis_client, clock):
    a, b = limiter(redis_client, clock, "a", burst=1), limiter(redis_client, clock, "b", burst=1)

    assert a.try_acquire() == 0
    assert a.try_acquire() > 0
    assert b.try_acquire() == 0


def test_acquire_sleeps_the_wait_the_script_returns(redis_client, clock):
    bucket = limiter(redis_client, clock, rate_per_minute=120, burst=2)

    for _ in range(3):
        bucket.acquire()

    assert clock.sleeps == [pytest.approx(0.5)]


def test_bucket_key_expires_when_idle(redis_client, clock):
    bucket = limiter(redis_client, clock, rate_per_minute=60, burst=3)
    bucket.try_acquire()

    ttl_ms = redis_client.pttl(bucket.key)

    assert 0 < ttl_ms <= 4000  # full refill (3 s) plus a second of slack


def test_default_burst_is_small():
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        assert RedisRateLimiter(client, "unused", rate_per_minute=200).burst == 10
        assert RedisRateLimiter(client, "unused", rate_per_minute=10).burst == 1
        with pytest.raises(ValueError):
            RedisRateLimiter(client, "unused", rate_per_minute=0)
    finally:
        client.close()
