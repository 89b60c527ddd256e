"""A verified token's sign-in, checked in the statement that binds the request's connection.

Every portal request binds its organization: the first statement on its connection sends the search_path and
``app.current_organization`` (tenants/rls/pgbackend), and that statement is also the request's health check. When
this process already knows which organization and schema a Clerk org id names (tenants.cache's hint), the same
statement asks the database for ``sign_in_version`` (tenants/migrations/0015): the row versions of the
organization, the user and their membership (read under RLS, as the organization just bound) and whether Clerk
ended the session. If the process read this sign-in before and nothing has changed since, that earlier read
stands; otherwise one more statement reads the rows themselves, with their version.

So a warm request costs no round trip of its own, to Redis or to the database, and it is checked against the
rows as they are now: a removal, a deactivation or an ended session written a moment ago by any process is
refused on the next request, whatever the cache holds. (Under load a Redis round trip cost the workers about
1.2 ms of CPU per request, `make loadtest`.) A process that has no hint yet, or a statement that could not be
sent, takes tenants.cache.token_lookups, and every miss is then answered as before.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import cast

from django.db import connection

from tenants import cache as tenant_cache
from tenants.models import Organization, OrganizationMember, User
from tenants.rls.pgbackend.base import DatabaseWrapper

# The version alone, what a warm request asks: the bound organization's id is the function's argument, so the
# function runs after it is set.
SIGN_IN_VERSION = ("SELECT public.sign_in_version({organization_id}, %(clerk_user_id)s, %(clerk_session_id)s), "
                   "{search_path}")

# The rows and their version: the bound organization's row, the user's and the membership (through the LATERAL
# join on ``bound``: it runs after the settings, and RLS admits the bound organization's rows only), in one
# snapshot. Tables are named with their schema: the statement is parsed under the previous request's
# search_path. Secrets (tenants.cache.NOT_CACHED) are not read: they load on first use.
SIGN_IN_ROWS = """
SELECT public.sign_in_version(bound.organization_id, %(clerk_user_id)s, %(clerk_session_id)s),
       {organization_columns}, {user_columns}, {membership_columns}
FROM (SELECT {{search_path}} AS search_path, {{organization_id}} AS organization_id) AS bound
LEFT JOIN public.organizations o ON o.id = bound.organization_id AND o.clerk_org_id = %(clerk_org_id)s
LEFT JOIN public.users u ON u.clerk_user_id = %(clerk_user_id)s
LEFT JOIN LATERAL (
    SELECT * FROM public.organization_members WHERE organization_id = bound.organization_id AND user_id = u.id
) m ON true
"""

MEMO_KEPT = 4_096  # signed-in (organization, user, session) triples per process; cleared when full


@dataclass(frozen=True)
class SignInRead:
    """What one read of the rows found: the values, not instances (each request gets its own instances)."""
    version: str
    organization: dict | None
    user: dict | None
    membership: dict | None

    def lookups(self, *, clerk_session_id: str | None, clerk_org_id: str | None,
                clerk_user_id: str) -> tenant_cache.SignInLookups:
        """The answers, checked exactly as the cache's are (tenants.cache)."""
        organization = tenant_cache.checked_organization(self.organization, clerk_org_id)
        identity = None
        if organization is not None and self.user is not None and self.membership is not None:
            identity = tenant_cache.checked_identity({"user": self.user, "membership": self.membership},
                                                     organization, clerk_user_id)
        return tenant_cache.SignInLookups(clerk_session_id=clerk_session_id, session_live=self.session_live,
                                          organization=organization, identity=identity)

    @property
    def session_live(self) -> bool:
        return not self.version.endswith(".true")


_reads: dict[tuple[str, str, str], SignInRead] = {}


def forget_all() -> None:
    """Forget every earlier read (tests)."""
    _reads.clear()


def _remember(key: tuple[str, str, str], read: SignInRead) -> None:
    if len(_reads) >= MEMO_KEPT:
        _reads.clear()
    _reads[key] = read


@functools.cache
def _rows_statement() -> str:
    def columns(alias: str, model) -> str:
        return ", ".join(f'{alias}."{model._meta.get_field(name).column}"' for name in tenant_cache.row_fields(model))

    return SIGN_IN_ROWS.format(organization_columns=columns("o", Organization), user_columns=columns("u", User),
                               membership_columns=columns("m", OrganizationMember))


def _read_from_row(row: tuple) -> SignInRead:
    values: list[dict | None] = []
    at = 1
    for model in (Organization, User, OrganizationMember):
        names = tenant_cache.row_fields(model)
        found = dict(zip(names, row[at:at + len(names)], strict=True))
        values.append(None if found["id"] is None else found)
        at += len(names)
    return SignInRead(row[0], *values)


def token_lookups(*, clerk_session_id: str | None, clerk_org_id: str | None,
                  clerk_user_id: str) -> tenant_cache.SignInLookups:
    """The sign-in lookups of a verified token, checked against the database in the binding's statement when
    this process knows the organization; else from the cache (tenants.cache.token_lookups)."""
    def from_cache() -> tenant_cache.SignInLookups:
        return tenant_cache.token_lookups(clerk_session_id=clerk_session_id, clerk_org_id=clerk_org_id,
                                          clerk_user_id=clerk_user_id)

    hint = tenant_cache.organization_hint(clerk_org_id) if clerk_org_id else None
    if clerk_org_id is None or hint is None:
        return from_cache()
    database = cast(DatabaseWrapper, connection)
    params = {"clerk_session_id": clerk_session_id or "", "clerk_org_id": clerk_org_id,
              "clerk_user_id": clerk_user_id}
    key = (clerk_org_id, clerk_user_id, clerk_session_id or "")

    earlier = _reads.get(key)
    if earlier is not None:
        row = database.select_bound(organization_id=hint.organization_id, schema_name=hint.schema_name,
                                    query=SIGN_IN_VERSION, params=params)
        if row is not None and row[0] == earlier.version:
            return earlier.lookups(clerk_session_id=clerk_session_id, clerk_org_id=clerk_org_id,
                                   clerk_user_id=clerk_user_id)
    row = database.select_bound(organization_id=hint.organization_id, schema_name=hint.schema_name,
                                query=_rows_statement(), params=params)
    if row is None:
        return from_cache()
    read = _read_from_row(row)
    lookups = read.lookups(clerk_session_id=clerk_session_id, clerk_org_id=clerk_org_id, clerk_user_id=clerk_user_id)
    if lookups.organization is None:
        # No such organization, or a hint that names another one's: the cache's way answers, and hints again.
        tenant_cache.forget_hint(clerk_org_id)
        _reads.pop(key, None)
        return from_cache()
    if lookups.identity is not None and lookups.session_live:
        _remember(key, read)  # only a "let in" is reused; anything else goes the full way each time
    else:
        _reads.pop(key, None)
    return lookups
