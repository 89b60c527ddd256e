"""Bind one organization to a unit of work: a request, a job, a shell.

Binding sets both walls together: django-tenants' search_path (wall 1) and the organization that our
database backend sends with every cursor as ``app.current_organization`` (wall 2, read by the RLS
policies). Both are reset in ``finally``, so a persistent connection never carries one organization into
the next request or job.

The organization lives in a context variable, not on the connection: the backend re-sends it whenever a
cursor is taken, so a reused connection always carries the current unit of work's organization.

Cross-organization reads of the public tables go through ``platform_access``: a separate database
connection, logged in as the platform role, which the public tables' policies admit by role. The app role
cannot turn into it: no setting it can change opens another organization's rows.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connection, connections

if TYPE_CHECKING:
    from tenants.models import Organization
    from tenants.rls.pgbackend.base import DatabaseWrapper

logger = logging.getLogger(__name__)

PLATFORM_ALIAS = "platform"

_bound_organization_id: ContextVar[str | None] = ContextVar("bound_organization_id", default=None)
_platform_access: ContextVar[bool] = ContextVar("platform_access", default=False)


class NoOrganizationBound(RuntimeError):
    """Raised by code that needs an organization when none is bound (fail closed)."""


def bound_organization_id() -> str | None:
    return _bound_organization_id.get()


def require_organization_id() -> str:
    organization_id = _bound_organization_id.get()
    if organization_id is None:
        raise NoOrganizationBound("This code must run inside bind_organization().")
    return organization_id


def rls_organization_setting() -> str:
    """The value the database backend sends as app.current_organization ('' when nothing is bound)."""
    return _bound_organization_id.get() or ""


def in_platform_access() -> bool:
    """True inside platform_access() with no organization bound: public models use the platform connection.

    A bind_organization() nested inside platform_access() is ordinary organization work again.
    """
    return _platform_access.get() and _bound_organization_id.get() is None


@contextlib.contextmanager
def bind_organization(organization: Organization) -> Iterator[Organization]:
    """Select the organization's schema and RLS identity for the duration of the block."""
    if not organization.is_active:
        raise NoOrganizationBound(f"Organization {organization.pk} is inactive.")
    tenant_connection = cast("DatabaseWrapper", connection)  # the backend is django-tenants' (settings)
    previous_tenant = tenant_connection.tenant
    token = _bound_organization_id.set(str(uuid.UUID(str(organization.pk))))
    tenant_connection.set_tenant(organization)
    try:
        yield organization
    finally:
        _bound_organization_id.reset(token)
        tenant_connection.set_tenant(previous_tenant)


@contextlib.contextmanager
def platform_access(reason: str) -> Iterator[None]:
    """Let platform code read and write every organization's rows in the *public* tables.

    This is the one cross-organization door. Inside it, the database router (tenants/rls/router.py) sends
    queries on public models to the ``platform`` connection, which logs in as the platform role
    (DATABASE_PLATFORM_URL). The public tables' policies admit that role by name; tenant tables (patients,
    messages) admit no one but the bound organization, and the platform role has no grant on a tenant
    schema at all. Used by the Django admin (staff only), the scheduler's fan-out and a few platform
    services; every use is logged with its reason. Write through ``transaction.atomic(using=write_alias())``.
    """
    if PLATFORM_ALIAS not in settings.DATABASES and not shares_default_connection():
        raise ImproperlyConfigured(
            "Platform access needs DATABASE_PLATFORM_URL (the platform database role): see README, Database roles."
        )
    logger.info("platform access opened: %s", reason)
    token = _platform_access.set(True)
    try:
        yield
    finally:
        _platform_access.reset(token)


def write_alias() -> str:
    """The database alias that public-table writes of the current unit of work go to."""
    return PLATFORM_ALIAS if in_platform_access() else DEFAULT_DB_ALIAS


def shares_default_connection() -> bool:
    """The test suite points the platform alias at the default connection (a test's rows are uncommitted,
    so a second connection could not see them); the backend then switches roles on that one connection."""
    # The handler's private thread-local of open connections (not in the stubs): looking does not open one.
    open_connections = connections._connections  # type: ignore[attr-defined]
    return getattr(open_connections, PLATFORM_ALIAS, None) is connections[DEFAULT_DB_ALIAS]


def unbind_all() -> None:
    """Return the connection to the public schema with nothing bound (start of a request or job)."""
    cast("DatabaseWrapper", connection).set_schema_to_public()
