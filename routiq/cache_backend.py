"""Django's RedisCache, keeping one redis client per connection pool instead of building one per command.

Django's RedisCacheClient.get_client constructs a new ``redis.Redis`` for every cache call, and that constructor
fills a table of ~170 response callbacks: in a cProfile of a warm sign-in it cost more CPU than the commands it
sent. A redis client is safe to share between threads (each command takes a connection from the pool, which
also notices a fork), so one per pool is built once and reused.
"""

from __future__ import annotations

from django.core.cache.backends import redis as django_redis


class ReusingRedisCacheClient(django_redis.RedisCacheClient):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        # The pool is kept for the life of this object, so its id is stable. Both attributes are Django's own
        # (RedisCacheClient), absent from the stubs.
        pool = self._get_connection_pool(write)  # type: ignore[attr-defined]
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients.setdefault(id(pool), self._client(connection_pool=pool))  # type: ignore[attr-defined]
        return client


class RedisCache(django_redis.RedisCache):
    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self._class = ReusingRedisCacheClient
