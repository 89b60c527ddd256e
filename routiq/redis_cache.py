"""Django's Redis cache backend, with one redis-py client per connection pool instead of one per operation.

Django's RedisCacheClient builds a new ``redis.Redis`` for every get and add. redis-py's constructor fills a
table of some 170 response callbacks each time, which made a cache read cost about three times the round trip
to Redis: on the sign-in path, several reads per request. A ``redis.Redis`` over a pool is thread-safe and
keeps no per-call state, and the pool notices a fork (gunicorn's workers) and opens its own connections.
"""

from __future__ import annotations

from django.core.cache.backends import redis as django_redis


class ClientReusingRedisCacheClient(django_redis.RedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(django_redis.RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = ClientReusingRedisCacheClient
