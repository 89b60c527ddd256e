"""django-tenants' PostgreSQL backend, plus the RLS identity sent with every cursor.

django-tenants issues ``SET search_path`` when a cursor is taken. We add
``set_config('app.current_organization', …, false)`` whenever the value
this unit of work needs differs from the one last sent on this connection. Session-level (not LOCAL)
settings work under autocommit; re-sending from the context variable means a reused connection always
carries the current unit of work's organization, or '' when none is bound (fail closed).

A PostgreSQL backend keeps the catalog entries of every schema it has touched for the rest of its life (about
85 MB after 1,000 organizations), so a persistent connection is also closed at the end of the request in
which it has touched DATABASE_MAX_SCHEMAS_PER_CONNECTION schemas (scripts/bench_backend_memory.py).
"""

from __future__ import annotations

import psycopg
from django.conf import settings
from django.db import DatabaseError
from django_tenants.postgresql_backend import base as tenants_base
from psycopg import sql

from tenants.rls.binding import in_platform_access, rls_organization_setting, shares_default_connection
from tenants.rls.pgbackend.operations import DatabaseOperations

SET_ORGANIZATION_SQL = "SELECT set_config('app.current_organization', %s, false)"


class DatabaseWrapper(tenants_base.DatabaseWrapper):
    ops_class = DatabaseOperations

    def __init__(self, *args, **kwargs):
        self._rls_sent: tuple[str, str] | None = None
        self._base_role: str | None = None
        self._schemas_touched: set[str] = set()
        super().__init__(*args, **kwargs)

    def _cursor(self, name=None):
        cursor = super()._cursor(name=name)
        self._send_rls_settings(cursor if name is None else None)
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

    def _send_rls_settings(self, cursor=None) -> None:
        wanted = (rls_organization_setting(), self._wanted_role())
        if wanted == self._rls_sent:
            return
        raw_cursor = self.connection.cursor() if cursor is None else cursor
        try:
            raw_cursor.execute(SET_ORGANIZATION_SQL, [wanted[0]])
            if wanted[1]:
                if self._base_role is None:
                    raw_cursor.execute("SELECT current_user")
                    self._base_role = raw_cursor.fetchone()[0]
                raw_cursor.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(wanted[1])))
        except (DatabaseError, psycopg.Error):
            # The transaction has already failed; the caller's next statement fails too and rolls back.
            # Raising here would break Django's savepoint handling (a failed savepoint must be rolled back
            # by the atomic block that owns it, not by an error from inside cursor creation).
            self._rls_sent = None
        else:
            self._rls_sent = wanted
        finally:
            if cursor is None:
                raw_cursor.close()

    # A rollback reverts a set_config issued inside the transaction: forget what we sent.
    def close(self):
        self._rls_sent = None
        self._base_role = None
        self._schemas_touched = set()
        super().close()

    def rollback(self):
        self._rls_sent = None
        self._base_role = None  # a SET ROLE inside the transaction is undone with it
        super().rollback()

    def savepoint_rollback(self, sid):
        try:
            super().savepoint_rollback(sid)
        finally:
            self._rls_sent = None
