"""Bind one organization to a unit of work: a request, a job, a shell.

Binding sets both walls together: django-tenants' search_path (wall 1) and the organization that our
database backend sends with every cursor as ``app.current_organization`` (wall 2, read by the RLS
policies). Both are reset in ``finally``, so a persistent connection never carries one organization into
the next request or job.

The organization lives in a context variable, not on the connection: the backend re-sends it whenever a
cursor is taken, which is what kept reused connections from leaking (stack-notes §3, P5).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

from django.db import connection

if TYPE_CHECKING:
    from tenants.models import Organization

logger = logging.getLogger(__name__)

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


def rls_settings() -> tuple[str, str]:
    """The values the database backend sends as app.current_organization and app.platform_access."""
    return (_bound_organization_id.get() or "", "on" if _platform_access.get() else "")


@contextlib.contextmanager
def bind_organization(organization: Organization) -> Iterator[Organization]:
    """Select the organization's schema and RLS identity for the duration of the block."""
    if not organization.is_active:
        raise NoOrganizationBound(f"Organization {organization.pk} is inactive.")
    previous_tenant = connection.tenant
    token = _bound_organization_id.set(str(uuid.UUID(str(organization.pk))))
    connection.set_tenant(organization)
    try:
        yield organization
    finally:
        _bound_organization_id.reset(token)
        connection.set_tenant(previous_tenant)


@contextlib.contextmanager
def platform_access(reason: str) -> Iterator[None]:
    """Let platform code read every organization's rows in the *public* tables.

    This is the one cross-organization door: the RLS policies of the public tables that carry
    organization_id (members, credentials, sync and audit logs) admit rows when app.platform_access is
    'on'. Tenant tables (patients, messages) have no such clause: reading them still needs
    bind_organization(). Used by the Django admin (staff only) and by the scheduler's fan-out.
    """
    logger.info("platform access opened: %s", reason)
    token = _platform_access.set(True)
    try:
        yield
    finally:
        _platform_access.reset(token)


def unbind_all() -> None:
    """Return the connection to the public schema with nothing bound (start of a request or job)."""
    connection.set_schema_to_public()
