"""django-tenants' PostgreSQL backend, plus the RLS identity sent with every cursor.

django-tenants sets the ``search_path`` when a cursor is taken after a schema change. We add
``app.current_organization`` whenever the value this unit of work needs differs from the one last sent on this
connection, and send both in one ``SELECT set_config(…), set_config(…)``: a signed-in request switches both,
and one round trip instead of two is a tenth of a list page's time. Session-level (not LOCAL) settings work
under autocommit; re-sending from the context variable means a reused connection always carries the current
unit of work's organization, or '' when none is bound (fail closed). What was sent is remembered until the
connection closes or a rollback may have undone it, so a value already in force is not sent again.

``select_bound`` sends an organization's settings together with a query that needs them (the sign-in's own
rows, tenants/clerk/bound_read.py): one round trip that is also the request's health check.

A PostgreSQL backend keeps the catalog entries of every schema it has touched for the rest of its life (about
85 MB after 1,000 organizations), so a persistent connection is also closed at the end of the request in
which it has touched DATABASE_MAX_SCHEMAS_PER_CONNECTION schemas (scripts/bench_backend_memory.py).
"""

from __future__ import annotations

import functools
import logging
from types import SimpleNamespace

import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django_tenants.postgresql_backend import base as tenants_base
from django_tenants.utils import quote_schema_name
from psycopg import sql

from tenants.rls.binding import in_platform_access, rls_organization_setting, shares_default_connection
from tenants.rls.pgbackend.operations import DatabaseOperations

logger = logging.getLogger(__name__)

SEARCH_PATH = "search_path"
ORGANIZATION_SETTING = "app.current_organization"


@functools.lru_cache(maxsize=64)
def with_settings(query: str) -> str:
    """select_bound's query with its two set_config calls written in."""
    return query.format(search_path="set_config('search_path', %(rls_search_path)s, false)",
                        organization_id="set_config('app.current_organization', %(rls_organization)s, false)::uuid")


def search_path_setting(schemas: list[str]) -> str:
    """The search_path value for these schemas, as SET would take it."""
    return ",".join(quote_schema_name(schema) for schema in schemas)


class DatabaseWrapper(tenants_base.DatabaseWrapper):
    ops_class = DatabaseOperations
    search_path_set_schemas: list[str] | None  # django-tenants': what it last sent (None: send at the next cursor)

    def __init__(self, *args, **kwargs):
        self._rls_sent: tuple[str, str] | None = None
        self._search_path_sent: str | None = None
        self._base_role: str | None = None
        self._schemas_touched: set[str] = set()
        super().__init__(*args, **kwargs)

    def _cursor(self, name=None):
        # django-tenants' own _cursor is skipped: its SET search_path goes out with our setting, in one statement.
        cursor = super(tenants_base.DatabaseWrapper, self)._cursor(name=name)
        self._send_session_settings(cursor if name is None else None)
        self._schemas_touched.add(self.schema_name)
        return cursor

    def close_if_unusable_or_obsolete(self):
        """Django's checks at each request's start and end, and the catalog-memory bound of this module."""
        super().close_if_unusable_or_obsolete()
        limit = settings.DATABASE_MAX_SCHEMAS_PER_CONNECTION
        if self.connection is not None and not self.in_atomic_block and 0 < limit <= len(self._schemas_touched):
            self.close()

    def _wanted_role(self) -> str:
        """'' in production. In the test suite the platform alias *is* this connection (a test's uncommitted
        rows must be visible to it), so platform access switches the role here with SET ROLE, which
        PostgreSQL allows only because the suite's login role is a member of the platform role."""
        if not in_platform_access():
            return self._base_role or ""  # set only by a switch below: never outside the test suite
        return settings.DATABASE_PLATFORM_ROLE if shares_default_connection() else ""

    def _search_path_wanted(self) -> str | None:
        """The search_path to send, as SET would take it; None when the connection already has it. (django-tenants
        forgets what it sent at every set_tenant/set_schema; what this wrapper sent it remembers.)"""
        if self.search_path_set_schemas is not None:
            return None
        if not self.schema_name:
            raise ImproperlyConfigured("Database schema not set. Did you forget to call set_schema() or set_tenant()?")
        search_path = search_path_setting(self._get_cursor_search_paths())
        if search_path == self._search_path_sent:
            self.search_path_set_schemas = self._get_cursor_search_paths()
            return None
        return search_path

    def _role_in_force(self) -> str | None:
        """The role this wrapper last switched the session to ('' for none), or None if a rollback or a failure
        may have undone what it sent."""
        if self._rls_sent is not None:
            return self._rls_sent[1]
        return "" if self._base_role is None else None

    def select_bound(self, *, organization_id: str, schema_name: str, query: str, params: dict):
        """Bind the session to the organization — the search_path and ``app.current_organization`` that
        ``bind_organization`` of it sends — and run ``query`` under them, in one statement and round trip; its
        first row, or None when not sent (a transaction or role state this cannot vouch for, or a failure:
        the caller then takes its usual path, whose first cursor sends the settings again).

        ``query`` sets them where it writes ``{search_path}`` and ``{organization_id}`` (set_config calls; the
        second's value is the organization's id, as uuid). Whatever takes that value as its input — a function's
        argument, a LATERAL join on a subquery's column — runs after it is set: a table read there sees RLS as
        this organization. The statement is this request's health check too (CONN_HEALTH_CHECKS)."""
        if in_platform_access() or self._role_in_force() != self._wanted_role():
            return None
        # What set_tenant(organization) then computes (bind_organization includes the public schema).
        search_path = search_path_setting(tenants_base.DatabaseWrapper._get_cursor_search_paths(
            SimpleNamespace(schema_name=schema_name, include_public_schema=True)))
        try:
            self.ensure_connection()
            with self.connection.cursor() as cursor:
                cursor.execute(with_settings(query),
                               {**params, "rls_search_path": search_path, "rls_organization": organization_id})
                row = cursor.fetchone()
        except (DatabaseError, psycopg.Error) as exc:
            logger.warning("statement with the binding failed (the usual way follows): %s", exc)
            self._search_path_sent = None
            self._rls_sent = None
            if not self.in_atomic_block:
                self.close()  # as a failed health check: the next cursor opens a new connection
            return None
        self._search_path_sent = search_path
        self._rls_sent = (organization_id, self._wanted_role())
        self._schemas_touched.add(schema_name)
        self.health_check_done = True
        return row

    def is_usable(self) -> bool:
        """Django's health check (CONN_HEALTH_CHECKS), run before a persistent connection's first statement in
        each request. When the session settings are due anyway — a signed-in request binds its organization —
        sending them is the check: one round trip where ``SELECT 1`` and then the settings made two."""
        sent = None if self.connection is None else self._send_session_settings()
        return super().is_usable() if sent is None else sent

    def _send_session_settings(self, cursor=None) -> bool | None:
        """Send what the connection lacks of the search_path and the RLS identity: True when sent, False if that
        failed, None when there was nothing to send."""
        search_path = self._search_path_wanted()
        wanted_rls = (rls_organization_setting(), self._wanted_role())
        assignments: list[tuple[str, str]] = []
        if search_path is not None:
            assignments.append((SEARCH_PATH, search_path))
        if wanted_rls != self._rls_sent:
            assignments.append((ORGANIZATION_SETTING, wanted_rls[0]))
        if not assignments:
            return None
        raw_cursor = self.connection.cursor() if cursor is None else cursor
        try:
            raw_cursor.execute("SELECT " + ", ".join(["set_config(%s, %s, false)"] * len(assignments)),
                               [value for assignment in assignments for value in assignment])
            if wanted_rls != self._rls_sent and wanted_rls[1]:
                if self._base_role is None:
                    raw_cursor.execute("SELECT current_user")
                    self._base_role = raw_cursor.fetchone()[0]
                raw_cursor.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(wanted_rls[1])))
        except (DatabaseError, psycopg.Error):
            # The transaction has already failed; the caller's next statement fails too and rolls back.
            # Raising here would break Django's savepoint handling (a failed savepoint must be rolled back
            # by the atomic block that owns it, not by an error from inside cursor creation).
            # (As the health check: the connection is then closed, and a new one gets the settings.)
            self.search_path_set_schemas = None
            self._search_path_sent = None
            self._rls_sent = None
            return False
        else:
            if search_path is not None:
                self.search_path_set_schemas = self._get_cursor_search_paths()
                self._search_path_sent = search_path
            self._rls_sent = wanted_rls
            return True
        finally:
            if cursor is None:
                raw_cursor.close()

    # A rollback reverts a set_config issued inside the transaction: forget what we sent.
    def close(self):
        self._rls_sent = None
        self._search_path_sent = None
        self.search_path_set_schemas = None
        self._base_role = None
        self._schemas_touched = set()
        super().close()

    def rollback(self):
        self._rls_sent = None
        self._search_path_sent = None
        self.search_path_set_schemas = None
        self._base_role = None  # a SET ROLE inside the transaction is undone with it
        super().rollback()

    def savepoint_rollback(self, sid):
        try:
            super().savepoint_rollback(sid)
        finally:
            self._rls_sent = None
            self._search_path_sent = None
            self.search_path_set_schemas = None
