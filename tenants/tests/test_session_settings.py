"""The binding's session settings (tenants/rls/pgbackend): what each request sends before its first statement.

A persistent connection is health-checked before its first statement in each request (CONN_HEALTH_CHECKS).
When the organization's settings are due anyway, they are the check: one round trip, not SELECT 1 and then
the settings.
"""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection, connections

from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db

SHOW_BINDING = "SELECT current_setting('app.current_organization'), current_setting('search_path'), pg_backend_pid()"


@pytest.fixture
def wrapper():
    """A connection of the default alias's kind outside the test's transaction, as a gunicorn worker holds one."""
    wrapper = type(connections["default"])(dict(connection.settings_dict), "default")
    wrapper.ensure_connection()
    yield wrapper
    wrapper.close()


def record_statements(wrapper) -> list[str]:
    """Every statement sent on the wrapper's current database connection, by any cursor (Django's or raw)."""
    statements: list[str] = []
    factory = wrapper.connection.cursor_factory

    class Recording(factory):  # type: ignore[misc, valid-type]
        def execute(self, query, params=None, **kwargs):
            statements.append(query if isinstance(query, str) else query.as_string(self))
            return super().execute(query, params, **kwargs)

    wrapper.connection.cursor_factory = Recording
    return statements


def first_request_statement(wrapper, organization):
    """A request's start (Django's close_old_connections), then its first statement, bound to the organization."""
    wrapper.close_if_unusable_or_obsolete()  # the health check is due again
    with bind_organization(organization):
        wrapper.set_tenant(organization)
        with wrapper.cursor() as cursor:
            cursor.execute(SHOW_BINDING)
            return cursor.fetchone()


def test_the_health_check_carries_the_binding_in_one_round_trip(wrapper, org_a):
    statements = record_statements(wrapper)

    organization_id, search_path, _ = first_request_statement(wrapper, org_a)

    assert (organization_id, search_path) == (str(org_a.pk), f'"{org_a.schema_name}","public"')
    assert len(statements) == 2  # the settings as the health check, then the query: no SELECT 1 of its own
    assert statements[0].startswith("SELECT set_config(") and statements[1] == SHOW_BINDING


def test_with_nothing_to_send_the_health_check_is_django_s_own(wrapper, org_a):
    first_request_statement(wrapper, org_a)
    statements = record_statements(wrapper)
    wrapper.close_if_unusable_or_obsolete()

    with bind_organization(org_a):  # the same organization again: its settings are on the connection already
        wrapper.set_tenant(org_a)
        wrapper.search_path_set_schemas = wrapper._get_cursor_search_paths()
        with wrapper.cursor() as cursor:
            cursor.execute(SHOW_BINDING)

    assert statements == ["SELECT 1", SHOW_BINDING]


def test_a_connection_that_died_between_requests_is_replaced_and_bound(wrapper, org_a, org_b):
    _, _, dead_pid = first_request_statement(wrapper, org_a)
    with psycopg.connect(**wrapper.get_connection_params(), autocommit=True) as killer:
        killer.execute("SELECT pg_terminate_backend(%s)", [dead_pid])

    organization_id, search_path, pid = first_request_statement(wrapper, org_b)

    assert pid != dead_pid
    assert (organization_id, search_path) == (str(org_b.pk), f'"{org_b.schema_name}","public"')
