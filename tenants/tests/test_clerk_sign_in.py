"""Clerk sign-in through real HTTP requests with real RS256 tokens, as the app database role."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from patients.models import Contact
from routiq.testing.clerk_fixtures import AUTHORIZED_PARTY, bearer
from routiq.testing.clerk_stub import (
    forge_token_alg_none,
    forge_token_hs256_with_public_key,
    forge_token_tampered_payload,
    forge_token_wrong_kid,
)
from tenants.models import AuditLog, MembershipStatus, OrganizationMember, User
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db


@pytest.fixture
def patients(org_a, org_b):
    with bind_organization(org_a):
        alice_patient = Contact.objects.create(organization=org_a, first_name="Ava", last_name="Harbour")
    with bind_organization(org_b):
        bob_patient = Contact.objects.create(organization=org_b, first_name="Ben", last_name="Summit")
    return {"a": alice_patient, "b": bob_patient}


def test_token_for_a_sees_a_patients_and_token_for_b_sees_b_patients(client, mint, org_a, org_b, patients):
    response_a = client.get("/patients/", **bearer(mint(org_a)))
    response_b = client.get("/patients/", **bearer(mint(org_b)))

    assert response_a.status_code == 200
    assert b"Harbour" in response_a.content and b"Summit" not in response_a.content
    assert response_b.status_code == 200
    assert b"Summit" in response_b.content and b"Harbour" not in response_b.content


def test_a_token_with_a_b_patient_id_gets_404(client, mint, org_a, patients):
    own = client.get(f"/patients/{patients['a'].pk}/", **bearer(mint(org_a)))
    other = client.get(f"/patients/{patients['b'].pk}/", **bearer(mint(org_a)))
    malformed = client.get("/patients/not-a-uuid/", **bearer(mint(org_a)))

    assert own.status_code == 200
    assert other.status_code == 404
    assert malformed.status_code == 404
    assert b"Summit" not in other.content


def expired(mint, org):
    return mint(org, issued_at=datetime.now(UTC) - timedelta(minutes=5))


def not_yet_valid(mint, org):
    return mint(org, not_before=datetime.now(UTC) + timedelta(minutes=5))


def wrong_azp(mint, org):
    return mint(org, azp="https://evil.example")


def unknown_kid(mint, org):
    from tenants.clerk.dev_tokens import SigningKey

    return forge_token_wrong_kid(SigningKey.generate(kid="other"), "other", user_id="user_x",
                                 organization_id=org.clerk_org_id, azp=AUTHORIZED_PARTY)


def alg_none(mint, org):
    return forge_token_alg_none(mint(org))


def hs256_with_public_key(mint, org):
    from routiq.testing.clerk_fixtures import test_signing_key

    return forge_token_hs256_with_public_key(mint(org), test_signing_key())


def tampered_payload(mint, org):
    return forge_token_tampered_payload(mint(org), sub="user_test_mallory")


def pending_session(mint, org):
    return mint(org, session_status="pending")


def garbage(mint, org):
    return "not.a.token"


@pytest.mark.parametrize(
    "make_token",
    [expired, not_yet_valid, wrong_azp, unknown_kid, alg_none, hs256_with_public_key, tampered_payload,
     pending_session, garbage],
)
def test_bad_tokens_get_401_and_no_patient_data(client, mint, org_a, patients, make_token):
    response = client.get("/patients/", **bearer(make_token(mint, org_a)))

    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"
    assert b"Harbour" not in response.content


def test_a_browser_with_a_forged_cookie_gets_the_sign_in_page(client, mint, org_a, patients):
    client.cookies["__session"] = forge_token_alg_none(mint(org_a))

    response = client.get("/patients/")

    assert response.status_code == 401
    assert b"Sign in" in response.content and b"Harbour" not in response.content


def test_no_token_redirects_a_browser_to_sign_in(client, org_a):
    response = client.get("/patients/")

    assert response.status_code == 302
    assert response["Location"] == "/sign-in/?next=%2Fpatients%2F"


def test_token_without_an_organization_is_403(client, mint):
    response = client.get("/patients/", **bearer(mint(None)))

    assert response.status_code == 403


def test_token_for_an_unknown_organization_is_403(client, mint, org_a):
    token = mint(None, extra_claims={"o": {"id": "org_does_not_exist", "rol": "admin", "slg": "x"}})

    assert client.get("/patients/", **bearer(token)).status_code == 403


def test_token_for_an_inactive_organization_is_403(client, mint, org_a):
    org_a.is_active = False
    org_a.save(update_fields=["is_active"])

    assert client.get("/patients/", **bearer(mint(org_a))).status_code == 403


def test_v1_token_claims_are_accepted(client, mint, org_a, patients):
    response = client.get("/patients/", **bearer(mint(org_a, role="org:admin", version=1)))

    assert response.status_code == 200
    assert b"Harbour" in response.content


def test_first_token_creates_user_and_membership_just_in_time_with_mapped_role(client, mint, org_a):
    client.get("/patients/", **bearer(mint(org_a, user_id="user_new_bob", role="billing_clerk")))

    user = User.objects.get(clerk_user_id="user_new_bob")
    with bind_organization(org_a):
        membership = OrganizationMember.objects.get(organization=org_a, user=user)
    assert (membership.role, membership.clerk_role) == ("member", "billing_clerk")


def browser_get(client, token, path="/patients/"):
    """What Clerk's browser script does: the token in the __session cookie."""
    client.cookies["__session"] = token
    response = client.get(path)
    del client.cookies["__session"]
    return response


def test_a_cookie_token_opens_a_session_that_serves_later_requests(client, mint, org_a, patients):
    assert browser_get(client, mint(org_a)).status_code == 200

    response = client.get("/patients/")

    assert response.status_code == 200
    assert b"Harbour" in response.content
    with bind_organization(org_a):
        assert AuditLog.objects.filter(action="session.started", organization=org_a).count() == 1


def test_an_expired_cookie_rides_on_the_open_session(client, mint, org_a, patients):
    client.cookies["__session"] = mint(org_a)
    assert client.get("/patients/").status_code == 200

    client.cookies["__session"] = expired(mint, org_a)

    assert client.get("/patients/").status_code == 200


def test_bearer_requests_are_stateless(client, mint, org_a, patients):
    assert client.get("/patients/", **bearer(mint(org_a))).status_code == 200

    assert client.get("/patients/").status_code == 302
    with bind_organization(org_a):
        assert not AuditLog.objects.filter(action="session.started").exists()


def test_session_ends_after_the_idle_timeout(client, mint, org_a, patients, settings):
    assert browser_get(client, mint(org_a)).status_code == 200
    session = client.session
    idle_for = timedelta(seconds=settings.SESSION_IDLE_TIMEOUT_SECONDS + 1)
    session["routiq_last_seen"] = (timezone.now() - idle_for).isoformat()
    session.save()

    response = client.get("/patients/")

    assert response.status_code == 401
    assert b"idle-timeout" in response.content


def test_switching_organization_in_clerk_rebinds_the_session(client, mint, org_a, org_b, patients):
    browser_get(client, mint(org_a))
    first_key = client.session.session_key

    browser_get(client, mint(org_b))
    response = client.get("/patients/")

    assert b"Summit" in response.content and b"Harbour" not in response.content
    assert client.session.session_key != first_key


def test_membership_removed_by_webhook_is_refused_at_once(client, mint, org_a, patients):
    from tenants.services import membership_remove

    token = mint(org_a)
    assert browser_get(client, token).status_code == 200
    with bind_organization(org_a):
        membership = OrganizationMember.objects.get(organization=org_a, user__clerk_user_id="user_test_alice")
        membership_remove(membership=membership, when=timezone.now())

    assert client.get("/patients/").status_code == 403  # the open session
    assert client.get("/patients/", **bearer(token)).status_code == 403  # the unexpired token


def test_a_token_issued_after_removal_restores_the_membership(client, mint, org_a):
    from tenants.services import membership_remove

    client.get("/patients/", **bearer(mint(org_a)))
    with bind_organization(org_a):
        membership = OrganizationMember.objects.get(organization=org_a, user__clerk_user_id="user_test_alice")
        membership_remove(membership=membership, when=timezone.now() - timedelta(seconds=30))

    assert client.get("/patients/", **bearer(mint(org_a))).status_code == 200
    with bind_organization(org_a):
        membership.refresh_from_db()
    assert membership.status == MembershipStatus.ACTIVE


def test_deleted_user_is_refused_even_with_a_fresh_token(client, mint, org_a):
    from tenants.services import user_delete

    client.get("/patients/", **bearer(mint(org_a)))
    user_delete(user=User.objects.get(clerk_user_id="user_test_alice"))

    assert client.get("/patients/", **bearer(mint(org_a))).status_code == 403


def test_dev_sign_in_does_not_exist_when_debug_is_off(client, settings):
    assert settings.DEBUG is False
    assert client.get("/dev/sign-in/").status_code == 404


def test_dev_sign_in_goes_through_the_same_middleware(client, settings, org_a, patients, tmp_path):
    from tenants.clerk.authentication import verifier
    from tenants.clerk.dev_sign_in import dev_signing_key
    from tenants.services import membership_upsert, user_upsert_from_clerk

    settings.DEBUG = True
    settings.DEV_SIGN_IN_ENABLED, settings.CLERK_JWT_KEY, settings.CLERK_JWKS_URL = True, "", ""
    settings.DEV_SIGNING_KEY_PATH = tmp_path / "dev-key.pem"
    settings.CLERK_AUTHORIZED_PARTIES = ["http://testserver"]
    dev_signing_key.cache_clear(), verifier.cache_clear()
    user = user_upsert_from_clerk(clerk_user_id="user_dev_demo", first_name="Dev")
    membership = membership_upsert(organization=org_a, user=user, role="member")
    try:
        listing = client.get("/dev/sign-in/")
        signed_in = client.post("/dev/sign-in/", {"membership": str(membership.pk), "next": "/patients/"},
                                HTTP_HOST="testserver")
        client.cookies["__session"] = signed_in.cookies["__session"].value
        patients_page = client.get("/patients/")
    finally:
        dev_signing_key.cache_clear(), verifier.cache_clear()

    assert listing.status_code == 200 and b"Harbour Physio" in listing.content
    assert signed_in.status_code == 302 and signed_in["Location"] == "/patients/"
    assert patients_page.status_code == 200 and b"Harbour" in patients_page.content


def test_base_template_loads_clerks_script_only_when_configured(client, mint, org_a, settings):
    without = client.get("/patients/", **bearer(mint(org_a)))
    settings.CLERK_PUBLISHABLE_KEY, settings.CLERK_FRONTEND_API_URL = "pk_test_x", "https://clerk.example.com"
    with_clerk = client.get("/patients/", **bearer(mint(org_a)))

    assert b"clerk.browser.js" not in without.content
    assert b'data-clerk-publishable-key="pk_test_x"' in with_clerk.content
    assert b"https://clerk.example.com/npm/@clerk/clerk-js@5/dist/clerk.browser.js" in with_clerk.content


# --- sessions that outlive Clerk ------------------------------------------------------------------------

def test_a_session_ends_at_its_absolute_lifetime_however_active(client, mint, org_a, patients, settings):
    assert browser_get(client, mint(org_a)).status_code == 200
    session = client.session
    session["routiq_started"] = (timezone.now() - timedelta(seconds=settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS + 1)
                                 ).isoformat()
    session["routiq_last_seen"] = timezone.now().isoformat()  # active a moment ago
    session.save()

    response = client.get("/patients/")

    assert response.status_code == 401
    assert b"session-expired" in response.content


def test_the_session_expiry_is_fixed_at_sign_in_and_does_not_slide(client, mint, org_a, patients, settings):
    from django.contrib.sessions.models import Session

    assert browser_get(client, mint(org_a)).status_code == 200
    key = client.session.session_key
    expires = Session.objects.get(session_key=key).expire_date
    session = client.session
    session["routiq_last_seen"] = (timezone.now() - timedelta(seconds=120)).isoformat()  # due a touch
    session.save()

    assert client.get("/patients/").status_code == 200

    assert Session.objects.get(session_key=key).expire_date == expires
    started = datetime.fromisoformat(client.session["routiq_started"])
    assert abs((expires - started).total_seconds() - settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS) < 1


def test_sign_out_ends_the_clerk_session_here_and_sends_the_browser_to_sign_out_of_clerk(
    client, mint, org_a, patients, settings
):
    settings.CLERK_PUBLISHABLE_KEY, settings.CLERK_FRONTEND_API_URL = "pk_test_x", "https://clerk.example.com"
    settings.CLERK_SIGN_IN_URL = "https://accounts.example.com/sign-in"
    assert browser_get(client, mint(org_a, session_id="sess_signout")).status_code == 200

    signed_out = client.post("/sign-out/")
    landing = client.get(signed_out["Location"])

    assert signed_out.status_code == 302 and signed_out["Location"] == "/sign-in/?signed-out=1"
    assert b"data-clerk-sign-out" in landing.content and b"js/clerk-sign-out.js" in landing.content
    # Clerk's hosted sign-in comes back to the plain sign-in page, not to the one that signs out again.
    assert b"signed-out" not in landing.content.split(b"redirect_url=")[1].split(b'"')[0]
    # Until Clerk's script has signed the browser out, it may still send a fresh token of that Clerk session.
    assert browser_get(client, mint(org_a, session_id="sess_signout")).status_code == 401
    assert browser_get(client, mint(org_a, session_id="sess_signed_in_again")).status_code == 200


def test_the_sign_out_script_is_static_and_calls_clerks_sign_out():
    from django.conf import settings

    script = (settings.BASE_DIR / "static" / "js" / "clerk-sign-out.js").read_text()
    assert "signOut(" in script and "data-clerk-sign-out" in script


# --- unaudited writes -----------------------------------------------------------------------------------

def test_memberships_created_or_changed_at_sign_in_are_audited(client, mint, org_a):
    client.get("/patients/", **bearer(mint(org_a, user_id="user_jit_audit", role="member")))
    client.get("/patients/", **bearer(mint(org_a, user_id="user_jit_audit", role="admin",
                                           issued_at=datetime.now(UTC) + timedelta(seconds=1))))

    with bind_organization(org_a):
        rows = list(AuditLog.objects.filter(object_type="membership", changes__user="user_jit_audit")
                    .order_by("id").values_list("action", "actor__clerk_user_id", "changes"))
    assert [(action, actor) for action, actor, _ in rows] == [
        ("membership.created", "user_jit_audit"), ("membership.updated", "user_jit_audit")
    ]
    assert rows[1][2]["after"]["role"] == "admin"
