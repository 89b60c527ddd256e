"""Webhook URLs on the Integrations page: the organization's token (shown to admins, rotatable, audited)
and the vendors' webhook secrets (write-only, encrypted, audited without their value)."""

from __future__ import annotations

import pytest

from routiq.testing.clerk_fixtures import bearer
from tenants.credentials import credential_get, credential_set
from tenants.models import AuditLog, Organization
from tenants.rls.binding import bind_organization
from tenants.webhook_endpoints import (
    credential_webhook_secret,
    organization_for_webhook_token,
    organization_webhook_token_rotate,
)

pytestmark = pytest.mark.django_db
HOOK_SECRET = "chatwoot-hmac-secret-zz91"


def test_every_organization_has_its_own_url_safe_token(org_a, org_b):
    tokens = [org_a.webhook_token, org_b.webhook_token]

    assert len(set(tokens)) == 2
    assert all(len(token) >= 43 and token.replace("-", "").replace("_", "").isalnum() for token in tokens)


def test_a_new_organization_gets_a_fresh_token():
    first, second = Organization(name="One"), Organization(name="Two")

    assert len(first.webhook_token) >= 43 and first.webhook_token != second.webhook_token


def test_a_token_finds_only_its_active_organization(org_a, org_b):
    assert organization_for_webhook_token(org_a.webhook_token) == org_a
    assert organization_for_webhook_token(org_b.webhook_token) == org_b
    assert organization_for_webhook_token(org_a.webhook_token[:-1]) is None
    assert organization_for_webhook_token("") is None
    assert organization_for_webhook_token("x" * 500) is None


def test_rotation_retires_the_old_url_and_is_audited_without_the_token(client, mint, org_a):
    old = org_a.webhook_token

    response = client.post("/settings/integrations/webhook-token/rotate", **bearer(mint(org_a)))

    org_a.refresh_from_db()
    assert response.status_code == 302
    assert org_a.webhook_token != old
    assert organization_for_webhook_token(old) is None
    assert client.post(f"/webhooks/chatwoot/{old}/", b"{}", content_type="application/json").status_code == 404
    with bind_organization(org_a):
        audit = AuditLog.objects.get(action="organization.webhook_token_rotated")
    assert old not in str(audit.changes) and org_a.webhook_token not in str(audit.changes)


def test_a_member_cannot_rotate_or_see_the_urls(client, mint, org_a):
    old = org_a.webhook_token

    member = bearer(mint(org_a, role="member", user_id="user_test_member"))
    rotate = client.post("/settings/integrations/webhook-token/rotate", **member)
    page = client.get("/settings/integrations/", **member)

    org_a.refresh_from_db()
    assert (rotate.status_code, page.status_code, org_a.webhook_token) == (403, 403, old)


def test_the_page_shows_an_admin_their_own_webhook_urls_only(client, mint, org_a, org_b):
    body = client.get("/settings/integrations/", **bearer(mint(org_a))).content.decode()

    assert f"/webhooks/chatwoot/{org_a.webhook_token}/" in body
    assert f"/webhooks/manychat/{org_a.webhook_token}/" in body
    assert org_b.webhook_token not in body


def test_the_webhook_secret_is_write_only_encrypted_and_audited(client, mint, org_a):
    with bind_organization(org_a):
        credential_set(organization=org_a, provider="chatwoot", secret="api-token-aaaa-1111",
                       base_url="https://chatwoot.example.com", account_id="1")

    response = client.post("/settings/integrations/chatwoot/webhook-secret",
                           {"chatwoot-webhook-webhook_secret": HOOK_SECRET}, **bearer(mint(org_a)))
    page = client.get("/settings/integrations/", **bearer(mint(org_a))).content.decode()

    assert response.status_code == 302
    with bind_organization(org_a):
        credential = credential_get(organization=org_a, provider="chatwoot")
        audit = AuditLog.objects.get(action="credential.webhook_secret_set")
    assert credential_webhook_secret(credential) == HOOK_SECRET
    assert HOOK_SECRET not in credential.webhook_secret_ciphertext
    assert HOOK_SECRET not in page and HOOK_SECRET[-4:] not in page and "one is stored" in page
    assert HOOK_SECRET not in str(audit.changes)


def test_the_webhook_secret_can_be_removed(client, mint, org_a):
    with bind_organization(org_a):
        credential_set(organization=org_a, provider="manychat", secret="1234:manychat-token")
    client.post("/settings/integrations/manychat/webhook-secret", {"manychat-webhook-webhook_secret": "s3cret-value"},
                **bearer(mint(org_a)))

    client.post("/settings/integrations/manychat/webhook-secret", {"remove": "1"}, **bearer(mint(org_a)))

    with bind_organization(org_a):
        assert credential_get(organization=org_a, provider="manychat").webhook_secret_ciphertext == ""
        assert AuditLog.objects.filter(action="credential.webhook_secret_removed").count() == 1


def test_a_member_cannot_set_a_webhook_secret_and_cliniko_has_none(client, mint, org_a):
    with bind_organization(org_a):
        credential_set(organization=org_a, provider="cliniko", secret="cliniko-key-1234-au1")
        credential_set(organization=org_a, provider="manychat", secret="1234:manychat-token")

    cliniko = client.post("/settings/integrations/cliniko/webhook-secret",
                          {"cliniko-webhook-webhook_secret": "x-secret"}, **bearer(mint(org_a)))
    member = client.post("/settings/integrations/manychat/webhook-secret",
                         {"manychat-webhook-webhook_secret": "x-secret"},
                         **bearer(mint(org_a, role="member", user_id="user_test_member")))

    assert (member.status_code, cliniko.status_code) == (403, 404)
    with bind_organization(org_a):
        assert credential_get(organization=org_a, provider="manychat").webhook_secret_ciphertext == ""


def test_rotation_service_changes_only_that_organization(org_a, org_b):
    before_b = org_b.webhook_token

    organization_webhook_token_rotate(organization=org_a, actor_label="test")

    assert Organization.objects.get(pk=org_b.pk).webhook_token == before_b
