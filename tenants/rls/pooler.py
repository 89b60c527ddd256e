"""Connection poolers the binding is safe behind, and the start-up check that refuses the others.

The binding is *session* state on the database connection: our backend sends
``set_config('app.current_organization', …, false)``, and django-tenants ``SET search_path``, only when the
value differs from the one last sent on this client connection (tenants/rls/pgbackend). That is right as
long as one client connection is one server session for its whole life: directly, or through PgBouncer in
**session** pooling. In *transaction* (or *statement*) pooling PgBouncer hands each transaction to whichever
server connection is free, so the organization set by one worker's request is the session state another
worker's next query runs with, and a query can run with no set_config at all because "this connection"
already had it (routiq/tests/test_connection_safety.py shows the foreign rows). Re-sending before every
statement would not close it either: the set_config and the query are two transactions and may land on two
servers. So RoutIQ supports session pooling only, and refuses to start when it cannot prove it.

The proof: with ``DATABASE_POOLER=pgbouncer-session`` the check opens a connection exactly as the app does
(same host, port, database, role) under a one-off ``application_name``, finds that client in PgBouncer's
admin console (``SHOW CLIENTS``, ``DATABASE_PGBOUNCER_ADMIN_URL``; a ``stats_users`` role is enough), and
reads the pool mode of its (database, user) pool from ``SHOW POOLS`` — the mode PgBouncer actually applies,
whether it came from the global ``pool_mode``, the database entry or the user entry. Finding our own
client also proves the admin URL names the PgBouncer that DATABASE_URL goes through.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
from django.conf import settings
from django.core import checks
from psycopg.rows import dict_row

POOLER_NONE = "none"
POOLER_PGBOUNCER_SESSION = "pgbouncer-session"
POOLERS = (POOLER_NONE, POOLER_PGBOUNCER_SESSION)
BINDING_ENGINE = "tenants.rls.pgbackend"
CONNECT_TIMEOUT_SECONDS = 5
# A backend caches the catalog of every schema it touches (about 85 MB after 1,000 organizations): a server
# connection older than this has had the time to wander through too many of them (README, "Connection pooling").
MAX_SERVER_LIFETIME_SECONDS = 3600


class PoolerUnverified(Exception):
    """The pool mode could not be established from PgBouncer's admin console."""


@dataclass(frozen=True)
class PoolReport:
    pool_mode: str
    server_lifetime: int
    server_reset_query: str


def connection_params(settings_dict: dict) -> dict:
    """libpq keywords for a Django DATABASES entry: the host, port, database and role the app uses."""
    params = {
        "host": settings_dict.get("HOST") or None,
        "port": settings_dict.get("PORT") or None,
        "dbname": settings_dict.get("NAME"),
        "user": settings_dict.get("USER") or None,
        "password": settings_dict.get("PASSWORD") or None,
    }
    return {key: value for key, value in params.items() if value is not None}


def pgbouncer_pool_report(*, admin_url: str, settings_dict: dict) -> PoolReport:
    """The pool mode PgBouncer applies to the app's connections of ``settings_dict``, read from its console."""
    marker = f"routiq-pooler-check-{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        **connection_params(settings_dict), application_name=marker, autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
    ) as app_connection:  # autocommit: statement pooling would refuse the BEGIN, and say nothing of its mode
        app_connection.execute("SELECT 1")
        with psycopg.connect(
            admin_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS, row_factory=dict_row
        ) as console:
            clients = [row for row in console.execute("SHOW CLIENTS").fetchall() if row["application_name"] == marker]
            if not clients:
                raise PoolerUnverified(
                    "DATABASE_PGBOUNCER_ADMIN_URL names a PgBouncer that the app's connection does not go through "
                    "(its client is not in SHOW CLIENTS)."
                )
            pool_key = (clients[0]["database"], clients[0]["user"])
            modes = [row["pool_mode"] for row in console.execute("SHOW POOLS").fetchall()
                     if (row["database"], row["user"]) == pool_key]
            config = {row["key"]: row["value"] for row in console.execute("SHOW CONFIG").fetchall()}
    if not modes:
        raise PoolerUnverified(f"PgBouncer lists no pool for database {pool_key[0]!r}, user {pool_key[1]!r}.")
    return PoolReport(
        pool_mode=modes[0],
        server_lifetime=int(config.get("server_lifetime") or 0),
        server_reset_query=config.get("server_reset_query", ""),
    )


def pooler_messages(*, pooler: str, admin_url: str, databases: dict[str, dict]) -> list[checks.CheckMessage]:
    """What the start-up check reports for this pooler setting and these DATABASES entries."""
    if pooler not in POOLERS:
        return [checks.Error(
            f"DATABASE_POOLER={pooler!r} is not one of {', '.join(POOLERS)}.",
            hint="PgBouncer in transaction or statement pooling is not supported: see README, Connection pooling.",
            id="routiq.E101",
        )]
    if pooler == POOLER_NONE:
        return []
    if not admin_url:
        return [checks.Error(
            "DATABASE_POOLER=pgbouncer-session needs DATABASE_PGBOUNCER_ADMIN_URL to verify the pool mode.",
            hint="A role in PgBouncer's stats_users, e.g. postgresql://routiq_app@pgbouncer:6432/pgbouncer.",
            id="routiq.E102",
        )]
    messages: list[checks.CheckMessage] = []
    for alias, settings_dict in databases.items():
        try:
            report = pgbouncer_pool_report(admin_url=admin_url, settings_dict=settings_dict)
        except (psycopg.Error, PoolerUnverified) as exc:
            messages.append(checks.Error(
                f"Could not verify PgBouncer's pool mode for the {alias!r} database: {exc}",
                id="routiq.E103",
            ))
            continue
        if report.pool_mode != "session":
            messages.append(checks.Error(
                f"PgBouncer serves the {alias!r} database in {report.pool_mode} pooling; RoutIQ refuses to run "
                "behind it: the organization is bound per database session, and this mode shares one session "
                "between clients.",
                hint="Set pool_mode = session for this database (README, Connection pooling).",
                id="routiq.E104",
            ))
        if not report.server_reset_query:
            messages.append(checks.Warning(
                "PgBouncer's server_reset_query is empty: a server connection keeps its session state for the "
                "next client (the backend re-sends the organization on a new connection, but keep DISCARD ALL).",
                id="routiq.W101",
            ))
        if not 0 < report.server_lifetime <= MAX_SERVER_LIFETIME_SECONDS:
            messages.append(checks.Warning(
                f"PgBouncer's server_lifetime is {report.server_lifetime} s: backend memory grows with every "
                f"schema a server connection touches; bound it (at most {MAX_SERVER_LIFETIME_SECONDS} s).",
                id="routiq.W102",
            ))
    return messages


@checks.register("routiq_pooler")
def check_database_pooler(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Refuse to start behind a pooler that is not verified to be PgBouncer in session pooling."""
    return pooler_messages(
        pooler=settings.DATABASE_POOLER,
        admin_url=settings.DATABASE_PGBOUNCER_ADMIN_URL,
        # The connections that carry the binding (our backend); the load test's bare one does not.
        databases={alias: dict(entry) for alias, entry in settings.DATABASES.items()
                   if entry["ENGINE"] == BINDING_ENGINE},
    )
