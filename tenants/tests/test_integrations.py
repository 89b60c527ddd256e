"""The Integrations page: clinic admins only, their own organization only, secrets write-only."""

from __future__ import annotations

import pytest

from routiq.testing.clerk_fixtures import bearer
from tenants.credentials import credential_get, credential_secret, credential_set
from tenants.models import AuditLog
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
SECRET_A = "cliniko-secret-aaaa-1111-au1"
SECRET_B = "cliniko-secret-bbbb-2222-au2"


@pytest.fixture
def credentials(org_a, org_b):
    with bind_organization(org_a):
        credential_set(organization=org_a, provider="cliniko", secret=SECRET_A)
    with bind_organization(org_b):
        credential_set(organization=org_b, provider="cliniko", secret=SECRET_B)


def test_a_member_gets_403(client, mint, org_a):
    response = client.get("/settings/integrations/", **bearer(mint(org_a, role="member")))

    assert response.status_code == 403


def test_a_member_cannot_change_a_credential(client, mint, org_a, credentials):
    response = client.post("/settings/integrations/cliniko/save", {"cliniko-secret": "stolen-au1"},
                           **bearer(mint(org_a, role="member")))

    assert response.status_code == 403
    with bind_organization(org_a):
        assert credential_secret(credential_get(organization=org_a, provider="cliniko")) == SECRET_A


def test_an_admin_sees_only_the_last_four_characters_of_their_own_secret(client, mint, org_a, credentials):
    response = client.get("/settings/integrations/", **bearer(mint(org_a)))

    body = response.content.decode()
    assert response.status_code == 200
    assert "…-au1" in body
    assert SECRET_A not in body and SECRET_B not in body and "…-au2" not in body


def test_an_admin_replaces_their_credential_and_the_other_clinic_is_untouched(client, mint, org_a, org_b,
                                                                               credentials):
    response = client.post(
        "/settings/integrations/cliniko/save",
        {"cliniko-secret": "new-secret-9999-au3", "cliniko-base_url": "", "cliniko-account_id": ""},
        **bearer(mint(org_a)),
    )

    assert response.status_code == 302
    with bind_organization(org_a):
        assert credential_secret(credential_get(organization=org_a, provider="cliniko")) == "new-secret-9999-au3"
        audit = AuditLog.objects.filter(action="credential.updated").get()
        assert "new-secret" not in str(audit.changes)
    with bind_organization(org_b):
        assert credential_secret(credential_get(organization=org_b, provider="cliniko")) == SECRET_B


def test_an_unknown_provider_is_404(client, mint, org_a):
    assert client.post("/settings/integrations/stripe/save", {}, **bearer(mint(org_a))).status_code == 404


def test_test_connection_reports_a_bad_key(client, mint, org_a, settings):
    from routiq.testing.cliniko_stub import ClinikoStub

    with ClinikoStub(api_keys=["the-right-key"]) as stub:
        with bind_organization(org_a):
            credential_set(organization=org_a, provider="cliniko", secret="the-wrong-key", base_url=stub.base_url)
        response = client.post("/settings/integrations/cliniko/test", follow=True, **bearer(mint(org_a)))

    assert b"Cliniko connection failed" in response.content
    assert b"the-wrong-key" not in response.content


def test_test_connection_succeeds_with_a_good_key(client, mint, org_a):
    from routiq.testing.cliniko_stub import ClinikoStub

    with ClinikoStub(api_keys=["the-right-key"]) as stub:
        with bind_organization(org_a):
            credential_set(organization=org_a, provider="cliniko", secret="the-right-key", base_url=stub.base_url)
        response = client.post("/settings/integrations/cliniko/test", follow=True, **bearer(mint(org_a)))

    assert b"Cliniko connection works" in response.content


def test_sync_now_enqueues_patients_then_appointments(client, mint, org_a, credentials, empty_queue,
                                                      django_capture_on_commit_callbacks):
    queue = empty_queue("sync")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/settings/integrations/cliniko/sync", **bearer(mint(org_a)))
    ids = set(queue.job_ids) | set(queue.deferred_job_registry.get_job_ids())

    assert response.status_code == 302
    assert ids == {f"cliniko-{org_a.pk}-patients", f"cliniko-{org_a.pk}-appointments"}


@pytest.mark.parametrize(("token", "expected"), [("cw-good-token", b"Chatwoot connection works"),
                                                  ("cw-bad-token", b"Chatwoot connection failed")])
def test_test_connection_for_chatwoot(client, mint, org_a, token, expected):
    from routiq.testing.vendor_stubs import ChatwootStub

    with ChatwootStub(token="cw-good-token", account_id="7") as stub:
        with bind_organization(org_a):
            credential_set(organization=org_a, provider="chatwoot", secret=token, base_url=stub.base_url,
                           account_id="7")
        response = client.post("/settings/integrations/chatwoot/test", follow=True, **bearer(mint(org_a)))

    assert expected in response.content and token.encode() not in response.content


@pytest.mark.parametrize(("token", "expected"), [("mc-good-token", b"ManyChat connection works"),
                                                  ("mc-bad-token", b"ManyChat connection failed")])
def test_test_connection_for_manychat(client, mint, org_a, token, expected):
    from routiq.testing.vendor_stubs import ManyChatStub

    with ManyChatStub(token="mc-good-token") as stub:
        with bind_organization(org_a):
            credential_set(organization=org_a, provider="manychat", secret=token, base_url=stub.base_url)
        response = client.post("/settings/integrations/manychat/test", follow=True, **bearer(mint(org_a)))

    assert expected in response.content and token.encode() not in response.content
