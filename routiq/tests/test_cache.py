"""routiq.cache on the real Redis: owners, tombstones, the deploy's key version, and Redis going away."""

from __future__ import annotations

import time
import uuid

import pytest
from django.core.cache import caches
from django.db import transaction

from routiq import cache

pytestmark = pytest.mark.django_db  # forget() registers its second tombstone with the connection's transaction
ORGANIZATION = uuid.uuid4()


def test_a_value_is_served_only_under_its_owners_key():
    key = cache.org_key(ORGANIZATION, "figures")
    cache.add(key, {"n": 1}, 60)
    assert cache.get(key) == {"n": 1}

    caches["default"].set(key, {"owner": str(uuid.uuid4()), "value": {"n": 2}})  # a bug's misfiled value
    assert cache.get(key) is None


def test_a_lookup_value_must_name_its_owner():
    key = cache.lookup_key("clerk-org", "org_x")
    cache.add(key, str(ORGANIZATION), 60)
    assert cache.get(key) == str(ORGANIZATION)

    caches["default"].set(key, {"owner": str(uuid.uuid4()), "value": str(ORGANIZATION)})
    assert cache.get(key) is None


def test_a_reader_cannot_store_what_it_read_before_a_change():
    key = cache.org_key(ORGANIZATION, "identity", "user_x")
    cache.add(key, "old", 60)

    cache.forget(key)  # the change
    cache.add(key, "old, read before the change", 60)  # the slow reader

    assert cache.get(key) is None
    backend = caches["default"]
    ttl = backend._cache.get_client(write=False).ttl(backend.make_and_validate_key(key))
    assert 0 < ttl <= cache.INVALIDATION_HOLD_SECONDS  # the hold ends: the key is cached again afterwards


def test_forget_tombstones_again_when_the_change_commits(django_capture_on_commit_callbacks):
    key = cache.org_key(ORGANIZATION, "identity", "user_y")
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        cache.forget(key)
        caches["default"].delete(key)  # the hold passed while the transaction was open
        cache.add(key, "read before the commit", 60)
    assert cache.get(key) == "read before the commit"

    for callback in callbacks:
        callback()

    assert cache.get(key) is None


def test_only_public_values_are_replaced():
    cache.replace(cache.public_key("jwks"), {"keys": []}, 60)
    assert cache.get(cache.public_key("jwks")) == {"keys": []}
    with pytest.raises(ValueError):
        cache.replace(cache.org_key(ORGANIZATION, "x"), 1, 60)


def test_the_key_version_orphans_every_old_value(settings):
    key = cache.org_key(ORGANIZATION, "figures")
    cache.add(key, "before the deploy", 60)

    settings.CACHES = {"default": {**settings.CACHES["default"], "VERSION": settings.CACHE_KEY_VERSION + 1}}

    assert cache.get(key) is None


def test_clear_leaves_other_keys_of_the_redis_alone():
    client = caches["default"]._cache.get_client(write=True)
    client.set("rq:test-cache-neighbour", "job", ex=60)
    cache.add(cache.org_key(ORGANIZATION, "x"), 1, 60)

    assert cache.clear() == 1
    assert client.get("rq:test-cache-neighbour") == b"job"
    client.delete("rq:test-cache-neighbour")


def test_switched_off_the_cache_is_not_read_but_changes_still_tombstone(settings):
    key = cache.org_key(ORGANIZATION, "x")
    cache.add(key, 1, 60)
    settings.CACHE_ENABLED = False

    assert cache.get(key) is None
    cache.forget(key)
    settings.CACHE_ENABLED = True
    assert cache.get(key) is None


def test_redis_down_is_a_miss_and_reads_skip_it_for_a_while(cache_unreachable, caplog):
    key = cache.org_key(ORGANIZATION, "x")

    started = time.perf_counter()
    assert cache.get(key) is None
    cache.add(key, 1, 60)
    cache.forget(key)
    assert time.perf_counter() - started < 1

    assert "cache unavailable, using the database" in caplog.text
    assert not cache.enabled()  # reads skip Redis for OUTAGE_BACKOFF_SECONDS
    cache.reset_outage()
    assert cache.enabled()


def test_the_backend_reuses_one_redis_client_and_still_round_trips():
    backend = caches["default"]._cache  # routiq.redis_cache: Django's builds a redis.Redis per operation
    key = cache.org_key(ORGANIZATION, "reused")

    cache.add(key, {"n": 1}, 60)

    assert backend.get_client(write=False) is backend.get_client(write=True)
    assert cache.get(key) == {"n": 1}
    cache.forget(key)
    assert cache.get(key) is None
