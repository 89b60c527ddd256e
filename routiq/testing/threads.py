"""Run test work in threads released at the same moment, each on a database connection of its own as the
app role — for the races a transactional test must prove (the same webhook twice at once, a new member's
first requests together, two clinics interleaved on reused connections)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import connection

T = TypeVar("T")


def in_threads(work: Callable[[int], T], count: int, *, database: dict | None = None) -> list[T]:
    """``work(index)`` in ``count`` threads started together; their results in index order. An error in one
    thread is raised here, after all have finished. ``database`` overrides entries of each thread's
    connection settings (HOST and PORT of a pooler in front of the same server)."""
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            if database:  # this thread's wrapper only; the settings dict itself is shared with other threads
                connection.settings_dict = {**connection.settings_dict, **database}
            with connection.cursor() as cursor:  # this thread's own connection
                cursor.execute(f'SET ROLE "{settings.DATABASE_APP_ROLE}"')
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread below
            errors.append(exc)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]


def at_once(call: Callable[[], T], copies: int) -> list[T]:
    """The same ``call`` ``copies`` times at the same moment."""
    return in_threads(lambda index: call(), copies)
