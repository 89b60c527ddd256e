"""routiq.cache on the real Redis: owners, tombstones, the deploy's key version, and Redis going away."""

from __future__ import annotations

import time
import uuid

import pytest
from django.core.cache import caches
from django.db import transaction

from routiq import cache
from routiq.testing.redis_commands import redis_commands

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


def test_get_many_answers_each_key_as_get_does_in_one_round_trip(monkeypatch):
    other = uuid.uuid4()
    mine, misfiled = cache.org_key(ORGANIZATION, "figures"), cache.org_key(other, "figures")
    lookup, bad_lookup = cache.lookup_key("clerk-org", "org_m"), cache.lookup_key("clerk-org", "org_n")
    forgotten, public, absent = cache.org_key(ORGANIZATION, "gone"), cache.public_key("p"), cache.org_key(other, "no")
    cache.add(mine, {"n": 1}, 60)
    caches["default"].set(misfiled, {"owner": str(ORGANIZATION), "value": {"n": 2}})  # A's value under B's key
    cache.add(lookup, str(ORGANIZATION), 60)
    caches["default"].set(bad_lookup, {"owner": str(other), "value": str(ORGANIZATION)})
    cache.add(forgotten, "old", 60)
    cache.forget(forgotten)
    cache.replace(public, {"keys": []}, 60)
    keys = (mine, misfiled, lookup, bad_lookup, forgotten, public, absent)

    with redis_commands(monkeypatch) as commands:
        answers = cache.get_many(*keys)

    assert answers == [{"n": 1}, None, str(ORGANIZATION), None, None, {"keys": []}, None]
    assert commands == ["MGET"]
    assert answers == [cache.get(key) for key in keys]


def test_get_many_of_no_keys_is_empty():
    assert cache.get_many() == []


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
    assert cache.get_many(key, key) == [None, None]
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


def test_redis_down_get_many_is_all_misses_and_reads_skip_it_for_a_while(cache_unreachable, caplog):
    keys = (cache.org_key(ORGANIZATION, "x"), cache.lookup_key("clerk-org", "org_x"))

    assert cache.get_many(*keys) == [None, None]

    assert "cache unavailable, using the database: get_many" in caplog.text
    assert not cache.enabled()


def test_the_backend_builds_one_redis_client_per_pool_not_one_per_call():
    client = caches["default"]._cache

    assert client.get_client(write=True) is client.get_client(write=True)
    assert client.get_client() is client.get_client()
