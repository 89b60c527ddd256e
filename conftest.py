"""Test set-up shared by every app.

The suite connects as the owner role (pytest-django needs CREATEDB to build the test database), then every
database test runs as the *app* role through ``SET ROLE``, so Row Level Security and grants are exactly
what the web app and the workers get. Inside ``platform_access()`` the same connection switches to the
*platform* role (tenants/rls/pgbackend): in production that is a connection of its own, but a test's rows are
uncommitted, and only the test's own connection can see them. Two organizations exist for the whole session.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.test import TransactionTestCase

from tenants.rls.binding import PLATFORM_ALIAS
from tenants.rls.roles import grant_app_privileges, grant_platform_privileges

pytest_plugins = ["routiq.testing.clerk_fixtures", "routiq.testing.browser_pages"]

ORGANIZATIONS: dict[str, dict[str, Any]] = {
    "a": {"name": "Harbour Physio", "clerk_org_id": "org_test_harbour"},
    "b": {"name": "Summit Chiro", "clerk_org_id": "org_test_summit"},
}


def create_session_organizations() -> None:
    from tenants.models import Organization
    from tenants.services import organization_create

    for spec in ORGANIZATIONS.values():
        if not Organization.objects.filter(clerk_org_id=spec["clerk_org_id"]).exists():
            organization_create(**spec)


_flush_after_transactional_test = TransactionTestCase._fixture_teardown  # type: ignore[attr-defined]  # private


def _fixture_teardown(self):
    """Transactional tests (and live_server) commit, so pytest-django flushes after each one. The flush runs
    as the owner (our backend drops the organizations' schemas and empties the audit log by its break-glass),
    then the session's organizations are created again for the tests that follow."""
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")  # SET ROLE outside a transaction outlives the test
    _flush_after_transactional_test(self)
    create_session_organizations()


TransactionTestCase._fixture_teardown = _fixture_teardown  # type: ignore[attr-defined]  # not in the stubs


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        # pytest-django builds a test database only when a collected test is marked django_db; never seed
        # a real database because a run happened to collect none.
        if not connection.settings_dict["NAME"].startswith("test_"):
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            (owner,) = cursor.fetchone()
            grant_app_privileges(cursor, owner, settings.DATABASE_APP_ROLE)
            grant_platform_privileges(cursor, owner, settings.DATABASE_PLATFORM_ROLE)
        create_session_organizations()


@pytest.fixture(autouse=True, scope="session")
def _platform_alias_is_the_test_connection():
    if PLATFORM_ALIAS in settings.DATABASES:
        pytest.exit("Unset DATABASE_PLATFORM_URL for the test suite: platform access runs on the test's connection.")
    connections[PLATFORM_ALIAS] = connections[DEFAULT_DB_ALIAS]
    yield


@pytest.fixture(autouse=True)
def _database_role(request):
    """Database tests run as the app role unless marked owner_role."""
    if request.node.get_closest_marker("django_db") is None:
        yield
        return
    request.getfixturevalue("db")
    if request.node.get_closest_marker("owner_role") is None:
        with connection.cursor() as cursor:
            # Inside the test's transaction: the rollback at the end of the test undoes it.
            cursor.execute(f'SET ROLE "{settings.DATABASE_APP_ROLE}"')
    yield


@pytest.fixture(autouse=True)
def _empty_cache():
    """Each test starts with an empty cache (real Redis, the cache's key prefix only: RQ's keys stay): a value
    cached by an earlier test would name rows that test's rollback removed."""
    from redis.exceptions import RedisError

    from routiq import cache
    from tenants import cache as tenant_cache
    from tenants.clerk import bound_read

    cache.reset_outage()
    tenant_cache.forget_hints()  # and what this process remembers of sign-ins, as a new process starts
    bound_read.forget_all()
    with contextlib.suppress(RedisError, OSError):  # no Redis: nothing cached either (every read is a miss)
        cache.clear()
    yield
    cache.reset_outage()


@pytest.fixture
def cache_unreachable(settings):
    """The cache pointed at a port nobody listens on (Redis down); the outage backoff is forgotten after."""
    import socket

    from routiq import cache

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{port}/0"}}
    yield
    cache.reset_outage()


@pytest.fixture
def org_a(db):
    from tenants.models import Organization

    return Organization.objects.get(clerk_org_id=ORGANIZATIONS["a"]["clerk_org_id"])


@pytest.fixture
def org_b(db):
    from tenants.models import Organization

    return Organization.objects.get(clerk_org_id=ORGANIZATIONS["b"]["clerk_org_id"])



@pytest.fixture
def empty_queue():
    """empty_queue(name) -> that RQ queue, emptied now and after the test (jobs, deferred and scheduled jobs)."""
    import django_rq

    used = []

    def clear(queue):
        queue.empty()
        for registry in (queue.deferred_job_registry, queue.scheduled_job_registry):
            for job_id in registry.get_job_ids():
                registry.remove(job_id, delete_job=True)

    def get(name: str):
        queue = django_rq.get_queue(name)
        clear(queue)
        used.append(queue)
        return queue

    yield get
    for queue in used:
        clear(queue)

