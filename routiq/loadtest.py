"""The load test's comparison view (scripts/loadtest.py): the patient list's own view, query and template
with no sign-in, no organization binding and no Row Level Security identity sent per request.

Mounted at /loadtest/bare-patients/ only when ROUTIQ_LOADTEST_BARE_VIEW=1, which nothing but the load test
sets (``check --deploy`` warns if it is on). It runs on the ``loadtest_bare`` connection: Django's plain
PostgreSQL backend logged in as ROUTIQ_LOADTEST_BARE_DATABASE_URL (the owner role), its search_path and
``app.current_organization`` set once when it connects and never again — one schema, nothing switched. (Not
by libpq ``options``: PgBouncer refuses that start-up parameter, and ``--through-pgbouncer`` sends this
connection through it too, like for like.) For the view, that connection stands in for the default one.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import DEFAULT_DB_ALIAS, connections

BARE_ALIAS = "loadtest_bare"


def bare_database(url: str, *, schema: str, organization_id: str, conn_max_age: int | None) -> dict[str, Any]:
    import dj_database_url

    database: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=conn_max_age or 0,
                                                          conn_health_checks=True))  # as the default
    database["ENGINE"] = "django.db.backends.postgresql"
    database["SESSION_SETTINGS"] = {"search_path": f'"{schema}","public"', "app.current_organization": organization_id}
    database["TEST"] = {"MIRROR": DEFAULT_DB_ALIAS}
    return database


def fix_session_settings(sender, connection, **kwargs) -> None:
    """connection_created: the bare connection's schema and organization, once for its life."""
    if connection.alias != BARE_ALIAS:
        return
    with connection.cursor() as cursor:
        for name, value in connection.settings_dict["SESSION_SETTINGS"].items():
            cursor.execute("SELECT set_config(%s, %s, false)", [name, value])


@functools.cache
def _organization():
    from tenants.models import Organization

    return Organization.objects.using(BARE_ALIAS).get(pk=settings.ROUTIQ_LOADTEST_BARE_ORGANIZATION)


def bare_patient_list(request):
    from patients import views

    request.organization, request.identity = _organization(), None
    default = connections[DEFAULT_DB_ALIAS]
    connections[DEFAULT_DB_ALIAS] = connections[BARE_ALIAS]
    try:
        return views.patient_list(request)
    finally:
        connections[DEFAULT_DB_ALIAS] = default


@checks.register(checks.Tags.security, deploy=True)
def check_bare_view_is_off(app_configs, **kwargs) -> list[checks.CheckMessage]:
    if not settings.ROUTIQ_LOADTEST_BARE_VIEW:
        return []
    return [checks.Warning("ROUTIQ_LOADTEST_BARE_VIEW is on: /loadtest/bare-patients/ shows one organization's "
                           "patients to anyone. It is for scripts/loadtest.py only.", id="routiq.W110")]
