"""A persistent connection is closed once it has touched DATABASE_MAX_SCHEMAS_PER_CONNECTION schemas: a
PostgreSQL backend keeps every touched schema's catalog entries until it ends (scripts/bench_backend_memory.py)."""

from __future__ import annotations

import pytest
from django.db import connection, connections


def backend_pid(wrapper) -> int:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.mark.django_db
@pytest.mark.parametrize(("limit", "replaced"), [(3, True), (4, False), (0, False)])
def test_a_connection_that_touched_the_limit_of_schemas_is_closed_at_the_request_boundary(
        settings, org_a, org_b, limit, replaced):
    settings.DATABASE_MAX_SCHEMAS_PER_CONNECTION = limit
    wrapper = type(connections["default"])(dict(connection.settings_dict), "default")  # outside the test's transaction
    try:
        first = backend_pid(wrapper)  # public
        for organization in (org_a, org_b):
            wrapper.set_tenant(organization)
            backend_pid(wrapper)
        wrapper.set_schema_to_public()
        wrapper.close_if_unusable_or_obsolete()  # what request_started/request_finished call
        assert (backend_pid(wrapper) != first) is replaced
    finally:
        wrapper.close()
