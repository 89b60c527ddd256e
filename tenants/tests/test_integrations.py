"""The Integrations page: clinic admins only, their own organization only, secrets write-only."""

from __future__ import annotations

import pytest

from routiq.testing.clerk_fixtures import bearer
from routiq.testing.vendor_stubs import ChatwootStub, RecordingServer
from tenants.connections import vendor_client
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
def test_test_connection_for_chatwoot(client, mint, org_a, settings, token, expected):
    from routiq.testing.vendor_stubs import ChatwootStub

    settings.VENDOR_ALLOW_PRIVATE_NETWORKS = True  # the stand-in listens on 127.0.0.1

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


# --- where a clinic's secret may go ----------------------------------------------------------------
CW_TOKEN = "cw-token-0123456789"
MARKER = "VENDOR-BODY-MARKER-51c9"


def stored(org, provider):
    with bind_organization(org):
        return credential_get(organization=org, provider=provider)


def save(client, mint, org, provider, **fields):
    data = {f"{provider}-{name}": value for name, value in fields.items()}
    return client.post(f"/settings/integrations/{provider}/save", data, follow=True, **bearer(mint(org)))


def test_the_page_offers_a_base_url_only_for_chatwoot(client, mint, org_a):
    body = client.get("/settings/integrations/", **bearer(mint(org_a))).content.decode()

    assert 'name="chatwoot-base_url"' in body and 'name="chatwoot-account_id"' in body
    assert 'name="cliniko-base_url"' not in body and 'name="manychat-base_url"' not in body


def test_a_clinic_admin_cannot_choose_where_the_cliniko_key_goes(client, mint, org_a, settings):
    settings.CLINIKO_API_URL = ""
    save(client, mint, org_a, "cliniko", secret=SECRET_A, base_url="http://127.0.0.1:9/v1")

    credential = stored(org_a, "cliniko")
    assert credential_secret(credential) == SECRET_A and credential.base_url == ""
    with bind_organization(org_a):  # the client Test connection and the sync would use (no request made)
        assert vendor_client(credential).http.base_url == "https://api.au1.cliniko.com/v1"


def test_a_posted_cliniko_base_url_keeps_the_operators(client, mint, org_a):
    with bind_organization(org_a):
        credential_set(organization=org_a, provider="cliniko", secret=SECRET_A,
                       base_url="https://cliniko-proxy.example.net/v1")

    save(client, mint, org_a, "cliniko", secret="replaced-key-5555-au1", base_url="https://evil.example.com")

    credential = stored(org_a, "cliniko")
    assert credential_secret(credential) == "replaced-key-5555-au1"
    assert credential.base_url == "https://cliniko-proxy.example.net/v1"


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:8765", "https://10.20.30.40", "https://169.254.169.254",
                                      "https://[::1]:8443", "https://localhost:8443", "http://chat.example.com"])
def test_a_chatwoot_base_url_that_is_not_public_https_is_refused_on_save(client, mint, org_a, settings, base_url):
    settings.VENDOR_ALLOW_PRIVATE_NETWORKS = False

    response = save(client, mint, org_a, "chatwoot", secret=CW_TOKEN, base_url=base_url, account_id="7")

    assert b"Please correct the form" in response.content
    assert stored(org_a, "chatwoot") is None


def test_the_address_is_checked_when_the_request_is_made_not_only_when_saved(client, mint, org_a, settings):
    with ChatwootStub(token=CW_TOKEN, account_id="7") as stub:
        settings.VENDOR_ALLOW_PRIVATE_NETWORKS = True
        save(client, mint, org_a, "chatwoot", secret=CW_TOKEN, base_url=stub.base_url, account_id="7")
        assert stored(org_a, "chatwoot").base_url == stub.base_url
        settings.VENDOR_ALLOW_PRIVATE_NETWORKS = False

        response = client.post("/settings/integrations/chatwoot/test", follow=True, **bearer(mint(org_a)))

    assert b"Chatwoot connection failed: destination refused" in response.content
    assert stub.requests == []


def test_a_host_name_that_resolves_to_loopback_is_refused_when_the_request_is_made(client, mint, org_a, settings):
    with ChatwootStub(token=CW_TOKEN, account_id="7") as stub:
        settings.VENDOR_ALLOW_PRIVATE_NETWORKS = True
        port = stub.base_url.rsplit(":", 1)[1]
        # Saved while allowed; "localhost" stands for any public-looking name whose DNS answer is 127.0.0.1.
        save(client, mint, org_a, "chatwoot", secret=CW_TOKEN, base_url=f"https://localhost:{port}", account_id="7")
        settings.VENDOR_ALLOW_PRIVATE_NETWORKS = False

        response = client.post("/settings/integrations/chatwoot/test", follow=True, **bearer(mint(org_a)))

    assert b"not a public internet address" in response.content
    assert stub.requests == []


def test_a_redirect_to_another_host_is_not_followed(client, mint, org_a, settings):
    settings.VENDOR_ALLOW_PRIVATE_NETWORKS = True
    with ChatwootStub(token=CW_TOKEN, account_id="7") as stub, RecordingServer() as other:
        stub.redirect_to(f"{other.base_url}/api/v1/accounts/7/contacts")
        save(client, mint, org_a, "chatwoot", secret=CW_TOKEN, base_url=stub.base_url, account_id="7")

        response = client.post("/settings/integrations/chatwoot/test", follow=True, **bearer(mint(org_a)))

    assert b"Chatwoot connection failed: redirect not followed (HTTP 302)" in response.content
    assert len(stub.requests) == 1 and other.requests == []


def test_a_changed_base_url_without_the_token_is_refused(client, mint, org_a, settings):
    settings.VENDOR_ALLOW_PRIVATE_NETWORKS = True
    save(client, mint, org_a, "chatwoot", secret=CW_TOKEN, base_url="https://chat.example.com", account_id="7")

    changed_url = save(client, mint, org_a, "chatwoot", secret="", base_url="http://127.0.0.1:9", account_id="7")
    changed_account = save(client, mint, org_a, "chatwoot", secret="", base_url="https://chat.example.com",
                           account_id="8")

    for response in (changed_url, changed_account):
        assert b"re-enter the access token" in response.content
    credential = stored(org_a, "chatwoot")
    assert (credential.base_url, credential.account_id) == ("https://chat.example.com", "7")


def test_an_unchanged_chatwoot_form_without_the_token_keeps_it(client, mint, org_a):
    save(client, mint, org_a, "chatwoot", secret=CW_TOKEN, base_url="https://chat.example.com", account_id="7")

    response = save(client, mint, org_a, "chatwoot", secret="", base_url="https://chat.example.com", account_id="7")

    assert b"Chatwoot credential saved" in response.content
    assert credential_secret(stored(org_a, "chatwoot")) == CW_TOKEN


@pytest.mark.parametrize("account_id", ["../1", "7/../../8", "-7", "seven"])
def test_a_chatwoot_account_id_that_is_not_a_positive_integer_is_refused(client, mint, org_a, account_id):
    response = save(client, mint, org_a, "chatwoot", secret=CW_TOKEN, base_url="https://chat.example.com",
                    account_id=account_id)

    assert b"positive whole number" in response.content
    assert stored(org_a, "chatwoot") is None


@pytest.mark.parametrize(("status", "expected"), [(401, b"authentication refused (HTTP 401)"),
                                                  (500, b"vendor unavailable (HTTP 500)"),
                                                  (422, b"request refused (HTTP 422)")])
def test_the_page_shows_the_kind_of_failure_never_the_vendors_body(client, mint, org_a, settings, status, expected):
    settings.VENDOR_ALLOW_PRIVATE_NETWORKS = True
    with ChatwootStub(token=CW_TOKEN, account_id="7") as stub:
        stub.answer_with(status, {"message": MARKER, "error": MARKER, "errors": [MARKER]})
        save(client, mint, org_a, "chatwoot", secret=CW_TOKEN, base_url=stub.base_url, account_id="7")

        response = client.post("/settings/integrations/chatwoot/test", follow=True, **bearer(mint(org_a)))

    assert b"Chatwoot connection failed: " + expected in response.content
    assert MARKER.encode() not in response.content and CW_TOKEN.encode() not in response.content
