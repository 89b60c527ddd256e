"""Which commands reach Redis: each is one round trip (tests of how many a request costs)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from redis import Redis


@contextlib.contextmanager
def redis_commands(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the commands sent to Redis inside the block, in order."""
    sent: list[str] = []
    original = Redis.execute_command

    def spy(self, *args, **options):
        sent.append(args[0])
        return original(self, *args, **options)

    with monkeypatch.context() as patch:
        patch.setattr(Redis, "execute_command", spy)
        yield sent
