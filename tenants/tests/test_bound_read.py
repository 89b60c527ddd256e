"""A warm token's sign-in is checked in the binding's own statement (tenants/clerk/bound_read.py): through real
HTTP with real signed tokens, as the app role. A process reuses what it read only while the database says
nothing changed, so a change no service announced — no cache forgotten — is still refused at once."""

from __future__ import annotations

from typing import cast

import pytest
from django.conf import settings
from django.db import connection

from patients.models import Contact
from routiq.testing.clerk_fixtures import bearer
from routiq.testing.redis_commands import redis_commands
from tenants import cache as tenant_cache
from tenants.clerk import bound_read
from tenants.models import OrganizationMember
from tenants.rls.binding import bind_organization, platform_access
from tenants.rls.pgbackend.base import DatabaseWrapper

pytestmark = pytest.mark.django_db
USER = "user_bound_read"
SESSION = "sess_bound_read"


def remembered_request(client, token, path="/patients/"):
    """Two requests: the first reads the rows, the second is answered from that read (no Redis, no query)."""
    assert client.get(path, **bearer(token)).status_code == 200
    assert client.get(path, **bearer(token)).status_code == 200
    assert bound_read._reads  # the read is remembered ...


def behind_the_caches_back(organization, statement: str, params: list) -> None:
    """A change no service made, so no cache was told: a script, a restore, another tool. Written as the test's
    login role (the app role may not write these rows), with the organization bound for RLS."""
    with bind_organization(organization), connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
        try:
            cursor.execute(statement, params)
        finally:
            cursor.execute(f'SET ROLE "{settings.DATABASE_APP_ROLE}"')


def remove_membership(organization):
    behind_the_caches_back(organization, "UPDATE organization_members SET status = 'removed', removed_at = now() "
                           "WHERE organization_id = %s", [organization.pk])


def delete_user(organization):
    behind_the_caches_back(organization, "UPDATE users SET deleted_at = now() WHERE clerk_user_id = %s", [USER])


def deactivate_organization(organization):
    behind_the_caches_back(organization, "UPDATE organizations SET is_active = false WHERE id = %s",
                           [organization.pk])


def end_clerk_session(organization):
    behind_the_caches_back(organization, "INSERT INTO ended_clerk_sessions (clerk_session_id, clerk_user_id, reason, "
                           "ended_at) VALUES (%s, %s, 'revoked', now())", [SESSION, USER])


@pytest.mark.parametrize(("change", "status"), [(remove_membership, 403), (delete_user, 403),
                                                (deactivate_organization, 403), (end_clerk_session, 401)],
                         ids=lambda value: getattr(value, "__name__", str(value)))
def test_a_change_no_service_announced_is_refused_by_the_next_request(client, mint, org_a, change, status,
                                                                    monkeypatch):
    token = mint(org_a, user_id=USER, session_id=SESSION)
    remembered_request(client, token)
    with redis_commands(monkeypatch) as commands:
        assert client.get("/patients/", **bearer(token)).status_code == 200
    assert commands == []  # ... and what a warm request uses: no Redis at all

    change(org_a)

    assert client.get("/patients/", **bearer(token)).status_code == status


def test_a_demotion_no_service_announced_takes_the_admin_pages_away(client, mint, org_a):
    token = mint(org_a, user_id=USER, role="admin")
    remembered_request(client, token, path="/settings/integrations/")

    behind_the_caches_back(org_a, "UPDATE organization_members SET role = 'member', clerk_role = 'org:member', "
                           "role_changed_at = now() WHERE organization_id = %s", [org_a.pk])

    assert client.get("/settings/integrations/", **bearer(token)).status_code == 403
    assert client.get("/patients/", **bearer(token)).status_code == 200


def test_a_rename_is_shown_by_the_next_request(client, mint, org_a):
    token = mint(org_a, user_id=USER)
    remembered_request(client, token)

    behind_the_caches_back(org_a, "UPDATE organizations SET name = 'Renamed Physio' WHERE id = %s", [org_a.pk])

    assert "Renamed Physio" in client.get("/patients/", **bearer(token)).content.decode()


def test_the_same_user_in_two_clinics_is_answered_for_each(client, mint, org_a, org_b):
    with bind_organization(org_a):
        Contact.objects.create(organization=org_a, first_name="Ava", last_name="Quixote")
    with bind_organization(org_b):
        Contact.objects.create(organization=org_b, first_name="Ben", last_name="Zanzibar")
    token_a, token_b = mint(org_a, user_id=USER, role="admin"), mint(org_b, user_id=USER, role="member")
    remembered_request(client, token_a)
    remembered_request(client, token_b)

    for _ in range(3):  # each request binds the other clinic than the one before it on this connection
        page_a = client.get("/patients/", **bearer(token_a))
        page_b = client.get("/patients/", **bearer(token_b))
        assert "Quixote" in page_a.content.decode() and "Zanzibar" not in page_a.content.decode()
        assert "Zanzibar" in page_b.content.decode() and "Quixote" not in page_b.content.decode()
        assert page_a.wsgi_request.identity.membership.role == "admin"
        assert page_b.wsgi_request.identity.membership.role == "member"
        assert page_b.wsgi_request.identity.organization.pk == org_b.pk


def membership_read_with_binding(organization) -> tuple:
    return cast(DatabaseWrapper, connection).select_bound(
        organization_id=str(organization.pk), schema_name=organization.schema_name, params={},
        query="SELECT bound.organization_id, current_setting('app.current_organization'), "
              "current_setting('search_path'), m.members "
              "FROM (SELECT {search_path} AS search_path, {organization_id} AS organization_id) AS bound, "
              "LATERAL (SELECT count(*) AS members FROM public.organization_members "
              "WHERE bound.organization_id IS NOT NULL) AS m")


def test_the_statement_reads_as_the_organization_it_binds(client, mint, org_a, org_b):
    for organization, user in ((org_a, "user_one"), (org_a, "user_two"), (org_b, "user_three")):
        assert client.get("/patients/", **bearer(mint(organization, user_id=user))).status_code == 200
    with bind_organization(org_b):  # the connection now carries B's settings
        assert OrganizationMember.objects.count() == 1

    bound_id, setting, search_path, members = membership_read_with_binding(org_a)

    assert (str(bound_id), setting, members) == (str(org_a.pk), str(org_a.pk), 2)  # A's rows, RLS as A
    assert search_path == f'"{org_a.schema_name}","public"'
    with bind_organization(org_a):  # what it sent stands: nothing is sent again, and A's rows are read
        assert OrganizationMember.objects.count() == 2
    with bind_organization(org_b):
        assert OrganizationMember.objects.count() == 1


def test_platform_access_never_takes_this_way(org_a):
    with platform_access("test"):
        assert membership_read_with_binding(org_a) is None


def test_without_a_hint_the_cache_answers_and_hints(client, mint, org_a, monkeypatch):
    token = mint(org_a, user_id=USER)
    assert client.get("/patients/", **bearer(token)).status_code == 200
    tenant_cache.forget_hints()
    bound_read.forget_all()

    with redis_commands(monkeypatch) as commands:
        assert client.get("/patients/", **bearer(token)).status_code == 200

    assert commands and "MGET" in commands
    assert tenant_cache.organization_hint(org_a.clerk_org_id).organization_id == str(org_a.pk)


def test_a_removed_member_is_not_remembered(client, mint, org_a):
    token = mint(org_a, user_id=USER, session_id=SESSION)
    remembered_request(client, token)
    remove_membership(org_a)

    assert client.get("/patients/", **bearer(token)).status_code == 403
    assert bound_read._reads == {}


def test_only_the_app_role_may_call_the_check():
    with connection.cursor() as cursor:
        cursor.execute("SELECT has_function_privilege(%s, 'public.sign_in_version(uuid, text, text)', 'EXECUTE'), "
                       "has_function_privilege('public', 'public.sign_in_version(uuid, text, text)', 'EXECUTE')",
                       [settings.DATABASE_APP_ROLE])
        assert cursor.fetchone() == (True, False)
