"""routiq.throttle against the real Redis of the test run (REDIS_URL), with unique scopes per test."""

from __future__ import annotations

import uuid

import django_rq
import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from routiq.throttle import hit, throttle


@pytest.fixture
def scope():
    name = f"test-{uuid.uuid4().hex}"
    yield name
    connection = django_rq.get_connection("default")
    keys = list(connection.scan_iter(f"throttle:{name}:*"))
    if keys:
        connection.delete(*keys)


def test_hit_allows_up_to_the_limit_then_returns_the_wait(scope):
    now = 1_714_550_415.0  # 15 s into a minute window
    assert [hit(scope, "k", 3, clock=lambda: now) for _ in range(3)] == [None, None, None]
    assert hit(scope, "k", 3, clock=lambda: now) == 45
    # Another key has its own budget; the next window starts afresh.
    assert hit(scope, "other", 3, clock=lambda: now) is None
    assert hit(scope, "k", 3, clock=lambda: now + 45) is None


def test_decorator_answers_429_with_retry_after_per_client_ip(scope):
    calls = []

    @throttle(scope=scope, limit_per_minute=lambda: 2)
    def view(request):
        calls.append(request)
        return HttpResponse("ok")

    factory = RequestFactory()
    responses = [view(factory.post("/x", REMOTE_ADDR="10.0.0.1")) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert 1 <= int(responses[2]["Retry-After"]) <= 60
    assert len(calls) == 2
    # X-Forwarded-For is not trusted: a spoofed header does not buy a new budget.
    assert view(factory.post("/x", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4")).status_code == 429
    assert view(factory.post("/x", REMOTE_ADDR="10.0.0.2")).status_code == 200


def test_custom_key_and_integer_limit(scope):
    @throttle(scope=scope, limit_per_minute=1, key=lambda request: request.POST.get("username", ""))
    def view(request):
        return HttpResponse("ok")

    factory = RequestFactory()
    assert view(factory.post("/x", {"username": "ann"})).status_code == 200
    assert view(factory.post("/x", {"username": "ann"})).status_code == 429
    assert view(factory.post("/x", {"username": "bob"})).status_code == 200


def test_redis_down_allows_the_request(scope, monkeypatch):
    import redis

    from routiq import throttle as module

    monkeypatch.setattr(module, "_redis", lambda: redis.Redis.from_url("redis://127.0.0.1:1/0",
                                                                        socket_connect_timeout=0.2))
    assert hit(scope, "k", 1) is None
    assert hit(scope, "k", 1) is None
