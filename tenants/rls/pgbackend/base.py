"""django-tenants' PostgreSQL backend, plus the RLS identity sent with every cursor.

django-tenants issues ``SET search_path`` when a cursor is taken. We add
``set_config('app.current_organization', …, false)`` (and the platform-access flag) whenever the value
this unit of work needs differs from the one last sent on this connection. Session-level (not LOCAL)
settings work under autocommit; re-sending from the context variable means a reused connection always
carries the current unit of work's organization, or '' when none is bound (fail closed).
"""

from __future__ import annotations

import psycopg
from django.db import DatabaseError
from django_tenants.postgresql_backend import base as tenants_base

from tenants.rls.binding import rls_settings

SET_RLS_SQL = (
    "SELECT set_config('app.current_organization', %s, false), set_config('app.platform_access', %s, false)"
)


class DatabaseWrapper(tenants_base.DatabaseWrapper):
    def __init__(self, *args, **kwargs):
        self._rls_sent: tuple[str, str] | None = None
        super().__init__(*args, **kwargs)

    def _cursor(self, name=None):
        cursor = super()._cursor(name=name)
        self._send_rls_settings(cursor if name is None else None)
        return cursor

    def _send_rls_settings(self, cursor=None) -> None:
        wanted = rls_settings()
        if wanted == self._rls_sent:
            return
        raw_cursor = self.connection.cursor() if cursor is None else cursor
        try:
            raw_cursor.execute(SET_RLS_SQL, wanted)
        except (DatabaseError, psycopg.Error):
            # The transaction has already failed; the caller's next statement fails too and rolls back.
            # Raising here would break Django's savepoint handling (stack-notes P6).
            self._rls_sent = None
        else:
            self._rls_sent = wanted
        finally:
            if cursor is None:
                raw_cursor.close()

    # A rollback reverts a set_config issued inside the transaction: forget what we sent.
    def close(self):
        self._rls_sent = None
        super().close()

    def rollback(self):
        self._rls_sent = None
        super().rollback()

    def savepoint_rollback(self, sid):
        try:
            super().savepoint_rollback(sid)
        finally:
            self._rls_sent = None
