"""The platform admin: staff only, every organization's public rows, secrets write-only, logs read-only."""

from __future__ import annotations

import pytest
from django.db import connection

from tenants.credentials import credential_get, credential_secret, credential_set
from tenants.models import AuditLog, Organization, SyncLog, User
from tenants.rls.binding import bind_organization, platform_access

pytestmark = pytest.mark.django_db
SECRET = "adm1n-visible-n3ver-au1"


@pytest.fixture
def staff(client):
    user = User.objects.create_user(username="platform-admin", password="correct horse battery staple",
                                    is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


@pytest.fixture
def logs(org_a, org_b):
    for organization in (org_a, org_b):
        with bind_organization(organization):
            SyncLog.objects.create(organization=organization, provider="cliniko", resource="patients",
                                   error=f"boom-{organization.slug}")


def test_a_signed_in_non_staff_user_gets_no_admin_page(client):
    client.force_login(User.objects.create_user(username="clinic-user", password="x" * 16))

    response = client.get("/admin/")

    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_anonymous_gets_the_admin_login(client):
    response = client.get("/admin/tenants/organization/")

    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_staff_see_every_organizations_sync_logs(client, staff, logs):
    response = client.get("/admin/tenants/synclog/")

    assert response.status_code == 200
    assert b"boom-harbour-physio" in response.content and b"boom-summit-chiro" in response.content


def test_sync_and_audit_logs_are_not_editable(client, staff, logs, org_a):
    with bind_organization(org_a):
        log = SyncLog.objects.get(organization=org_a)
        audit = AuditLog.objects.filter(organization=org_a).first()

    assert audit is not None
    change_url = f"/admin/tenants/synclog/{log.pk}/change/"

    view = client.get(change_url)  # staff may look (view permission) but the page offers no save

    assert view.status_code == 200 and b"boom-harbour-physio" in view.content
    assert b'name="_save"' not in view.content and b'name="_continue"' not in view.content
    assert client.post(change_url, {"error": "edited", "status": "succeeded"}).status_code == 403
    assert client.post(f"/admin/tenants/auditlog/{audit.pk}/change/", {"action": "edited"}).status_code == 403
    assert client.post(f"/admin/tenants/synclog/{log.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.post(f"/admin/tenants/auditlog/{audit.pk}/delete/", {"post": "yes"}).status_code == 403
    with bind_organization(org_a):
        assert SyncLog.objects.get(pk=log.pk).error == "boom-harbour-physio"
        assert AuditLog.objects.get(pk=audit.pk).action == audit.action


def test_organization_list_shows_member_counts_across_organizations(client, staff, org_a, mint):
    from routiq.testing.clerk_fixtures import bearer

    client.get("/patients/", **bearer(mint(org_a, user_id="user_admin_count")))  # a JIT membership in A
    client.force_login(staff)

    response = client.get("/admin/tenants/organization/")

    assert response.status_code == 200
    counts = {str(o.pk): o.active_members for o in response.context["cl"].result_list}  # evaluated in the request
    assert counts[str(org_a.pk)] == 1


def test_credential_secret_is_write_only_in_admin(client, staff, org_a):
    with bind_organization(org_a):
        credential = credential_set(organization=org_a, provider="cliniko", secret=SECRET)

    listing = client.get("/admin/tenants/apicredential/")
    change = client.get(f"/admin/tenants/apicredential/{credential.pk}/change/")

    assert listing.status_code == 200 and change.status_code == 200
    for response in (listing, change):
        assert SECRET.encode() not in response.content
    assert b"-au1" in listing.content


def test_credential_added_in_admin_is_encrypted_and_audited(client, staff, org_b):
    response = client.post("/admin/tenants/apicredential/add/", {
        "organization": str(org_b.pk), "provider": "cliniko", "secret": SECRET, "base_url": "", "account_id": "",
    })

    assert response.status_code == 302
    with bind_organization(org_b):
        credential = credential_get(organization=org_b, provider="cliniko")
        assert credential_secret(credential) == SECRET and SECRET not in credential.secret_ciphertext
        audit = AuditLog.objects.get(action="credential.created")
    assert audit.actor == staff and SECRET not in str(audit.changes)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"base_url": "https://chat.example.org", "account_id": "7"}, b"re-enter the access token"),
        ({"base_url": "https://chat.example.com", "account_id": "../7"}, b"positive whole number"),
        ({"base_url": "http://chat.example.com", "account_id": "7", "secret": "new-token"}, b"https"),
    ],
)
def test_admin_credential_changes_follow_the_services_rules_as_form_errors(client, staff, org_a, change, error):
    with bind_organization(org_a):
        credential = credential_set(organization=org_a, provider="chatwoot", secret=SECRET,
                                    base_url="https://chat.example.com", account_id="7")

    response = client.post(f"/admin/tenants/apicredential/{credential.pk}/change/",
                           {"secret": "", "base_url": "", "account_id": "", **change})

    assert response.status_code == 200 and error in response.content
    with bind_organization(org_a):
        stored = credential_get(organization=org_a, provider="chatwoot")
        assert (stored.base_url, stored.account_id, credential_secret(stored)) == (
            "https://chat.example.com", "7", SECRET
        )


def test_deactivate_action_keeps_the_data_and_audits(client, staff, org_a, org_b, logs):
    response = client.post("/admin/tenants/organization/", {
        "action": "deactivate", "_selected_action": [str(org_b.pk)],
    })

    assert response.status_code == 302
    assert Organization.objects.get(pk=org_b.pk).is_active is False
    assert Organization.objects.get(pk=org_a.pk).is_active is True  # only the selected one
    with platform_access("test"):
        audit = AuditLog.objects.get(action="organization.deactivated", object_id=str(org_b.pk))
        kept_log = SyncLog.objects.filter(organization=org_b, error="boom-summit-chiro").exists()
    assert (audit.organization_id, audit.actor_id, audit.object_type) == (org_b.pk, staff.pk, "organization")
    assert kept_log
    with connection.cursor() as cursor:  # the schema (the clinic's patients) is kept, never dropped
        cursor.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [org_b.schema_name])
        assert cursor.fetchone()[0] == 1


def test_database_health_page_for_staff(client, staff):
    response = client.get("/admin/database-health/")

    assert response.status_code == 200
    assert b"contacts" in response.content and b"Job queues" in response.content and b"sync" in response.content


def test_database_health_page_refuses_non_staff(client):
    client.force_login(User.objects.create_user(username="not-staff", password="x" * 16))

    response = client.get("/admin/database-health/")

    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_test_connection_admin_action_reports_the_vendors_answer(client, staff, org_a):
    from routiq.testing.cliniko_stub import ClinikoStub

    with ClinikoStub(api_keys=["right-key"]) as stub:
        with bind_organization(org_a):
            credential = credential_set(organization=org_a, provider="cliniko", secret="wrong-key-xyz",
                                        base_url=stub.base_url)
        response = client.post("/admin/tenants/apicredential/", {
            "action": "test_connection", "_selected_action": [str(credential.pk)],
        }, follow=True)

    assert b"Cliniko connection failed" in response.content and b"wrong-key-xyz" not in response.content
