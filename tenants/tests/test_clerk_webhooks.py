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
               timestamp: int | None = None, **extra):
    body = json.dumps({"type": event_type, "object": "event", "data": data}).encode()
    headers = svix_headers(secret, body, msg_id=msg_id or f"msg_{time.time_ns()}", timestamp=timestamp)
    return client.post(
        "/webhooks/clerk/", body, content_type="application/json",
        **{f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}, **extra,
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


def test_signed_but_malformed_event_is_acknowledged_once_as_failed(client):
    first = post_event(client, "organizationMembership.created", {"id": "orgmem_x"}, msg_id="msg_malformed")
    again = post_event(client, "organizationMembership.created", {"id": "orgmem_x"}, msg_id="msg_malformed")

    assert (first.status_code, first.json()) == (200, {"status": "failed"})
    assert again.json() == {"status": "duplicate"}
    delivery = WebhookDelivery.objects.get(delivery_id="msg_malformed")
    assert delivery.status == "failed" and "public_user_data" in delivery.error


def test_unknown_event_types_are_acknowledged(client):
    assert post_event(client, "session.created", {"id": "sess_1"}).json() == {"status": "ignored"}


def test_webhook_without_a_configured_secret_is_503(client, settings):
    settings.CLERK_WEBHOOK_SECRET = ""

    assert post_event(client, "user.created", user_data("user_wh_6")).status_code == 503


def post_body(client, body: bytes, *, msg_id: str | None = None, secret: str = SECRET, **extra):
    headers = svix_headers(secret, body, msg_id=msg_id or f"msg_{time.time_ns()}")
    return client.post(
        "/webhooks/clerk/", body, content_type="application/json",
        **{f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}, **extra,
    )


# --- bad input never 500s -------------------------------------------------------------------------------

def test_a_body_that_is_not_utf8_is_400_signed_or_not(client):
    body = b'{"type": "user.created", "data": {"id": "user_\xff\xfe"}}'

    signed = post_body(client, body)
    unsigned = client.post("/webhooks/clerk/", body, content_type="application/json")

    assert (signed.status_code, unsigned.status_code) == (400, 400)
    assert not WebhookDelivery.objects.exists()


def test_signed_json_that_is_not_an_event_is_recorded_as_failed(client):
    for number, body in enumerate([b"[1, 2]", b"not json", b'{"type": 7, "data": {}}']):
        response = post_body(client, body, msg_id=f"msg_not_event_{number}")
        assert (response.status_code, response.json()) == (200, {"status": "failed"})
    assert WebhookDelivery.objects.filter(status="failed").count() == 3


def test_names_with_nul_and_over_long_are_cleaned_and_stored(client, org_a):
    data = {"id": "user_wh_long", "first_name": "Al\x00ice" + "x" * 300, "last_name": None,
            "primary_email_address_id": None,
            "email_addresses": [{"id": "em_0"}, "junk", {"id": "em_1", "email_address": "al\x00ice@example.com"}]}

    response = post_event(client, "user.created", data)

    assert response.json() == {"status": "processed"}
    user = User.objects.get(clerk_user_id="user_wh_long")
    assert user.first_name == ("Alice" + "x" * 300)[:150]
    assert (user.last_name, user.email) == ("", "alice@example.com")


@pytest.mark.parametrize("addresses", [None, "alice@example.com", {"email_address": "x"}, [None], []])
def test_odd_email_addresses_are_stored_as_no_email(client, addresses):
    data = {"id": "user_wh_odd", "first_name": "Odd", "primary_email_address_id": "em_1"}
    if addresses is not None:
        data["email_addresses"] = addresses

    assert post_event(client, "user.created", data).json() == {"status": "processed"}
    assert User.objects.get(clerk_user_id="user_wh_odd").email == ""


def test_over_long_organization_name_and_membership_names_are_cut_to_the_column(client, org_a):
    post_event(client, "organization.updated", {"id": org_a.clerk_org_id, "name": "Harbour\x00" + "H" * 500})
    membership = membership_data(org_a, "user_wh_names")
    membership["public_user_data"].update(first_name="B" * 400, identifier="b" * 300 + "@example.com")

    assert post_event(client, "organizationMembership.created", membership).json() == {"status": "processed"}
    org_a.refresh_from_db()
    assert org_a.name == ("Harbour" + "H" * 500)[:200]
    user = User.objects.get(clerk_user_id="user_wh_names")
    assert (user.first_name, user.email) == ("B" * 150, "")  # an over-long address is dropped, not cut


def test_an_id_that_cannot_be_stored_is_acknowledged_once_as_failed(client):
    for number, bad_id in enumerate(["user_" + "9" * 100, "user_\x00nul", None, ["user_list"]]):
        response = post_event(client, "user.created", {"id": bad_id, "first_name": "X"}, msg_id=f"msg_bad_{number}")
        assert (response.status_code, response.json()) == (200, {"status": "failed"})
    assert WebhookDelivery.objects.filter(status="failed").count() == 4
    assert "user id" in WebhookDelivery.objects.get(delivery_id="msg_bad_0").error


# --- Clerk webhook bursts -------------------------------------------------------------------------------

@pytest.mark.owner_role
def test_a_burst_of_created_updated_and_membership_lands_once_provisioned(
    client, provisioning_queue, django_capture_on_commit_callbacks
):
    org = {"id": "org_wh_burst", "name": "Burst Physio", "slug": "burst"}
    member = {"id": "orgmem_burst", "role": "org:admin", "organization": {"id": "org_wh_burst"},
              "public_user_data": {"user_id": "user_wh_burst", "first_name": "Bea", "identifier": "bea@example.com"}}
    with django_capture_on_commit_callbacks(execute=True):
        created = post_event(client, "organization.created", org, msg_id="msg_burst_created")
        updated = post_event(client, "organization.updated", {**org, "name": "Burst Physio & Co"},
                             msg_id="msg_burst_updated")
        membership = post_event(client, "organizationMembership.created", member, msg_id="msg_burst_member")

    assert created.json() == {"status": "processed"}
    # Not yet: answered so that Svix redelivers, and not recorded as processed.
    assert (updated.status_code, membership.status_code) == (409, 409)
    assert set(WebhookDelivery.objects.values_list("delivery_id", flat=True)) == {"msg_burst_created"}
    assert provisioning_queue.job_ids == ["provision-org_wh_burst"]  # one job, not one per event
    job = provisioning_queue.fetch_job("provision-org_wh_burst")
    assert job.retries_left == 3
    job.perform()

    # Svix's redeliveries (same svix-id) now land.
    assert post_event(client, "organization.updated", {**org, "name": "Burst Physio & Co"},
                      msg_id="msg_burst_updated").json() == {"status": "processed"}
    assert post_event(client, "organizationMembership.created", member,
                      msg_id="msg_burst_member").json() == {"status": "processed"}
    organization = Organization.objects.get(clerk_org_id="org_wh_burst")
    assert organization.name == "Burst Physio & Co"
    with bind_organization(organization):
        assert OrganizationMember.objects.get(user__clerk_user_id="user_wh_burst").role == "admin"
        assert AuditLog.objects.filter(action="organization.updated", organization=organization).count() == 1


def test_organization_rename_by_webhook_is_audited(client, org_a):
    post_event(client, "organization.updated", {"id": org_a.clerk_org_id, "name": "Harbour Physio & Pilates"})

    with bind_organization(org_a):
        audit = AuditLog.objects.get(action="organization.updated", organization=org_a)
    assert audit.actor_label == "clerk-webhook"
    assert audit.changes["name"] == ["Harbour Physio", "Harbour Physio & Pilates"]


# --- role changes and stale tokens ----------------------------------------------------------------------

def test_a_token_issued_before_a_demotion_does_not_restore_admin(client, mint, org_a):
    from datetime import UTC, datetime, timedelta

    admin_token = mint(org_a, user_id="user_wh_demoted", role="admin",
                       issued_at=datetime.now(UTC) - timedelta(seconds=10))
    assert client.get("/settings/integrations/", **bearer(admin_token)).status_code == 200

    post_event(client, "organizationMembership.updated", membership_data(org_a, "user_wh_demoted", "org:member"))

    assert client.get("/settings/integrations/", **bearer(admin_token)).status_code == 403
    with bind_organization(org_a):
        assert OrganizationMember.objects.get(user__clerk_user_id="user_wh_demoted").role == "member"
    # A token issued after the change speaks for the role again (Clerk promoted them back, webhook late).
    # Its iat has one-second precision: the next second is the first one surely after the change.
    later = mint(org_a, user_id="user_wh_demoted", issued_at=datetime.now(UTC) + timedelta(seconds=1))
    assert client.get("/settings/integrations/", **bearer(later)).status_code == 200


# --- sessions that outlive Clerk ------------------------------------------------------------------------

def open_browser_session(client, token):
    client.cookies["__session"] = token
    assert client.get("/patients/").status_code == 200
    del client.cookies["__session"]
    assert client.get("/patients/").status_code == 200


@pytest.mark.parametrize("event_type", ["session.revoked", "session.ended", "session.removed"])
def test_clerk_ending_the_session_ends_the_portal_session(client, mint, org_a, event_type):
    open_browser_session(client, mint(org_a, user_id="user_wh_sess", session_id="sess_wh_1"))
    other = client.__class__()
    open_browser_session(other, mint(org_a, user_id="user_wh_sess", session_id="sess_wh_other"))

    response = post_event(client, event_type, {"id": "sess_wh_1", "user_id": "user_wh_sess", "object": "session"})

    assert response.json() == {"status": "processed"}
    assert client.get("/patients/").status_code == 302  # the Django session is gone
    # Its last token (valid for up to 60 s) cannot open a new one.
    assert client.get("/patients/", **bearer(mint(org_a, user_id="user_wh_sess", session_id="sess_wh_1"))
                      ).status_code == 401
    assert other.get("/patients/").status_code == 200  # another Clerk session of the same user carries on
    with bind_organization(org_a):
        assert AuditLog.objects.filter(action="session.ended", object_id="sess_wh_1").count() == 1


def test_a_banned_user_is_signed_out_everywhere_and_refused(client, mint, org_a):
    open_browser_session(client, mint(org_a, user_id="user_wh_banned", session_id="sess_wh_banned"))

    post_event(client, "user.updated", {**user_data("user_wh_banned"), "banned": True})

    assert client.get("/patients/").status_code == 302
    assert client.get("/patients/", **bearer(mint(org_a, user_id="user_wh_banned"))).status_code == 403

    post_event(client, "user.updated", {**user_data("user_wh_banned"), "banned": False})
    assert client.get("/patients/", **bearer(mint(org_a, user_id="user_wh_banned"))).status_code == 200


# --- rate limit -----------------------------------------------------------------------------------------

def test_the_webhook_endpoint_is_rate_limited_per_client_ip(client, settings):
    import django_rq

    settings.WEBHOOK_RATE_LIMIT_PER_MINUTE = 3
    ip = f"10.{time.time_ns() % 250}.{time.time_ns() % 249}.7"
    try:
        responses = [post_event(client, "session.created", {"id": f"sess_rl_{n}"}, REMOTE_ADDR=ip) for n in range(4)]
        elsewhere = post_event(client, "session.created", {"id": "sess_rl_x"}, REMOTE_ADDR="10.255.255.1")
    finally:
        redis = django_rq.get_connection("default")
        keys = list(redis.scan_iter("throttle:webhooks:clerk:*"))
        if keys:
            redis.delete(*keys)

    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert 1 <= int(responses[3]["Retry-After"]) <= 60
    assert elsewhere.status_code == 200
