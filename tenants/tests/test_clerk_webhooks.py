"""POST /webhooks/clerk/: Svix signatures, idempotency by svix-id, and each event's effect."""

from __future__ import annotations

import json
import time

import pytest
from django.db import connection

from routiq.testing.clerk_fixtures import bearer
from routiq.testing.clerk_stub import new_svix_secret, svix_headers
from tenants.jobs import provision_organization
from tenants.models import AuditLog, MembershipStatus, Organization, OrganizationMember, User, WebhookDelivery
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
SECRET = new_svix_secret()


@pytest.fixture(autouse=True)
def webhook_secret(settings):
    settings.CLERK_WEBHOOK_SECRET = SECRET


@pytest.fixture
def provisioning_queue(empty_queue):
    return empty_queue("provisioning")


def post_event(client, event_type: str, data: dict, *, msg_id: str | None = None, secret: str = SECRET,
               timestamp: int | None = None):
    body = json.dumps({"type": event_type, "object": "event", "data": data}).encode()
    headers = svix_headers(secret, body, msg_id=msg_id or f"msg_{time.time_ns()}", timestamp=timestamp)
    return client.post(
        "/webhooks/clerk/", body, content_type="application/json",
        **{f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()},
    )


def user_data(clerk_user_id: str, email: str = "alice@example.com") -> dict:
    return {"id": clerk_user_id, "first_name": "Alice", "last_name": "Ng", "primary_email_address_id": "em_1",
            "email_addresses": [{"id": "em_1", "email_address": email}]}


def membership_data(organization: Organization, clerk_user_id: str, role: str = "org:admin") -> dict:
    return {"id": f"orgmem_{clerk_user_id}", "role": role, "organization": {"id": organization.clerk_org_id},
            "public_user_data": {"user_id": clerk_user_id, "first_name": "Alice", "last_name": "Ng",
                                 "identifier": "alice@example.com"}}


def test_user_created_and_updated(client):
    assert post_event(client, "user.created", user_data("user_wh_1")).status_code == 200
    assert post_event(client, "user.updated", user_data("user_wh_1", email="new@example.com")).status_code == 200

    user = User.objects.get(clerk_user_id="user_wh_1")
    assert (user.email, user.first_name) == ("new@example.com", "Alice")


def test_bad_signature_changes_nothing(client):
    response = post_event(client, "user.created", user_data("user_wh_bad"), secret=new_svix_secret())

    assert response.status_code == 400
    assert not User.objects.filter(clerk_user_id="user_wh_bad").exists()
    assert not WebhookDelivery.objects.exists()


def test_stale_timestamp_changes_nothing(client):
    response = post_event(client, "user.created", user_data("user_wh_old"), timestamp=int(time.time()) - 600)

    assert response.status_code == 400
    assert not User.objects.filter(clerk_user_id="user_wh_old").exists()


def test_replayed_svix_id_is_processed_once(client, org_a):
    first = post_event(client, "organizationMembership.created", membership_data(org_a, "user_wh_2"), msg_id="msg_1")
    with bind_organization(org_a):
        OrganizationMember.objects.filter(user__clerk_user_id="user_wh_2").update(role="member")

    replay = post_event(client, "organizationMembership.created", membership_data(org_a, "user_wh_2"), msg_id="msg_1")

    assert (first.json(), replay.json()) == ({"status": "processed"}, {"status": "duplicate"})
    with bind_organization(org_a):
        assert OrganizationMember.objects.get(user__clerk_user_id="user_wh_2").role == "member"
        assert AuditLog.objects.filter(action="membership.created").count() == 1


def test_membership_created_updated_deleted(client, org_a):
    post_event(client, "organizationMembership.created", membership_data(org_a, "user_wh_3", "org:admin"))
    post_event(client, "organizationMembership.updated", membership_data(org_a, "user_wh_3", "org:member"))
    with bind_organization(org_a):
        assert OrganizationMember.objects.get(user__clerk_user_id="user_wh_3").role == "member"

    post_event(client, "organizationMembership.deleted", membership_data(org_a, "user_wh_3"))

    with bind_organization(org_a):
        membership = OrganizationMember.objects.get(user__clerk_user_id="user_wh_3")
        actions = list(AuditLog.objects.filter(object_id=str(membership.pk)).values_list("action", flat=True))
    assert membership.status == MembershipStatus.REMOVED and membership.removed_at is not None
    assert sorted(actions) == ["membership.created", "membership.removed", "membership.updated"]


def test_membership_deleted_by_webhook_refuses_an_unexpired_token(client, mint, org_a):
    token = mint(org_a, user_id="user_wh_4")
    assert client.get("/patients/", **bearer(token)).status_code == 200

    post_event(client, "organizationMembership.deleted", membership_data(org_a, "user_wh_4"))

    assert client.get("/patients/", **bearer(token)).status_code == 403


def test_user_deleted_refuses_the_user_and_ends_memberships(client, mint, org_a):
    token = mint(org_a, user_id="user_wh_5")
    client.get("/patients/", **bearer(token))

    post_event(client, "user.deleted", {"id": "user_wh_5", "deleted": True, "object": "user"})

    assert client.get("/patients/", **bearer(token)).status_code == 403
    with bind_organization(org_a):
        assert OrganizationMember.objects.get(user__clerk_user_id="user_wh_5").status == MembershipStatus.REMOVED


@pytest.mark.owner_role
def test_organization_created_is_provisioned_by_the_provisioning_job(
    client, provisioning_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_event(
            client, "organization.created", {"id": "org_wh_new", "name": "Ridge Osteo", "slug": "ridge"}
        )

    assert response.json() == {"status": "processed"}
    job = provisioning_queue.fetch_job("provision-org_wh_new")
    assert job is not None and job.func is provision_organization
    job.perform()  # what the provisioning worker (owner role) does

    organization = Organization.objects.get(clerk_org_id="org_wh_new")
    assert (organization.name, organization.slug, organization.is_active) == ("Ridge Osteo", "ridge", True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [organization.schema_name])
        assert cursor.fetchone()[0] == 1
    assert provision_organization("org_wh_new", "Ridge Osteo") == str(organization.pk)  # a retry is a no-op


def test_organization_updated_and_deleted(client, mint, org_a):
    post_event(client, "organization.updated", {"id": org_a.clerk_org_id, "name": "Harbour Physio & Pilates"})
    org_a.refresh_from_db()
    assert org_a.name == "Harbour Physio & Pilates"

    post_event(client, "organization.deleted", {"id": org_a.clerk_org_id, "deleted": True})

    org_a.refresh_from_db()
    assert org_a.is_active is False
    assert client.get("/patients/", **bearer(mint(org_a))).status_code == 403
    with connection.cursor() as cursor:  # deactivated, never dropped
        cursor.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [org_a.schema_name])
        assert cursor.fetchone()[0] == 1


def test_signed_but_malformed_event_is_400_and_not_recorded(client):
    response = post_event(client, "organizationMembership.created", {"id": "orgmem_x"})

    assert response.status_code == 400
    assert not WebhookDelivery.objects.exists()


def test_unknown_event_types_are_acknowledged(client):
    assert post_event(client, "session.created", {"id": "sess_1"}).json() == {"status": "ignored"}


def test_webhook_without_a_configured_secret_is_503(client, settings):
    settings.CLERK_WEBHOOK_SECRET = ""

    assert post_event(client, "user.created", user_data("user_wh_6")).status_code == 503
