"""Vendor credentials: encryption at rest, key rotation, audit without secrets, and organization isolation."""

from __future__ import annotations

import io
import logging
import secrets

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tenants.credentials import (
    credential_delete,
    credential_get,
    credential_secret,
    credential_set,
    credentials_rotate,
)
from tenants.crypto import CredentialDecryptionError, decrypt_secret, encrypt_secret, last_four
from tenants.models import ApiCredential, AuditLog, Organization
from tenants.rls.binding import NoOrganizationBound, bind_organization, platform_access

pytestmark = pytest.mark.django_db


def new_key() -> str:
    return Fernet.generate_key().decode()


def new_secret() -> str:
    return f"sk-live-{secrets.token_hex(16)}"


@pytest.fixture
def key(settings) -> str:
    settings.ROUTIQ_ENCRYPTION_KEYS = [new_key()]
    return settings.ROUTIQ_ENCRYPTION_KEYS[0]


def stored_ciphertext(organization: Organization, provider: str = "cliniko") -> str:
    with platform_access("test"):
        return ApiCredential.objects.get(organization=organization, provider=provider).secret_ciphertext


def rows_as_text(table: str, organization: Organization) -> str:
    """Whole rows rendered by PostgreSQL, much as pg_dump would write them."""
    with bind_organization(organization), connection.cursor() as cursor:
        cursor.execute(f"SELECT t::text FROM {table} t WHERE organization_id = %s", [organization.pk])
        rows = [row[0] for row in cursor.fetchall()]
    assert rows, f"no {table} rows for the organization: the check below would prove nothing"
    return "\n".join(rows)


# --- crypto ----------------------------------------------------------------------------------------


def test_encrypt_decrypt_round_trip(key):
    secret = new_secret()

    token = encrypt_secret(secret)

    assert secret not in token and secret[-8:] not in token
    assert decrypt_secret(token) == secret
    assert Fernet(key).decrypt(token.encode()).decode() == secret  # really under the configured key


def test_no_keys_configured_is_improperly_configured(settings):
    settings.ROUTIQ_ENCRYPTION_KEYS = []

    with pytest.raises(ImproperlyConfigured):
        encrypt_secret(new_secret())


def test_an_invalid_key_is_reported_without_echoing_it(settings):
    settings.ROUTIQ_ENCRYPTION_KEYS = ["not-a-fernet-key-0123456789"]

    with pytest.raises(ImproperlyConfigured) as excinfo:
        encrypt_secret("x" * 12)

    assert "not-a-fernet-key" not in str(excinfo.value)


def test_last_four_hides_short_secrets():
    assert last_four("abcdefgh1234") == "1234"
    assert last_four("abc1234") == ""


def test_a_removed_key_fails_loudly(settings, org_a):
    settings.ROUTIQ_ENCRYPTION_KEYS = [new_key()]
    credential = credential_set(organization=org_a, provider="cliniko", secret=new_secret())

    settings.ROUTIQ_ENCRYPTION_KEYS = [new_key()]  # the old key is gone; an unrelated one remains

    with pytest.raises(CredentialDecryptionError, match="ROUTIQ_ENCRYPTION_KEYS"):
        credential_secret(credential)
    with pytest.raises(CredentialDecryptionError):
        credentials_rotate()


# --- rotation --------------------------------------------------------------------------------------


def test_rotation_re_encrypts_every_organization_under_the_new_first_key(settings, org_a, org_b):
    old_key, new_first_key = new_key(), new_key()
    settings.ROUTIQ_ENCRYPTION_KEYS = [old_key]
    plaintexts = {org_a.pk: new_secret(), org_b.pk: new_secret()}
    for organization in (org_a, org_b):
        credential_set(organization=organization, provider="cliniko", secret=plaintexts[organization.pk])
    # Inactive organizations cannot be bound, yet their secrets must not be left under a retired key.
    Organization.objects.filter(pk=org_b.pk).update(is_active=False)
    before = {organization.pk: stored_ciphertext(organization) for organization in (org_a, org_b)}

    settings.ROUTIQ_ENCRYPTION_KEYS = [new_first_key, old_key]
    assert {pk: decrypt_secret(token) for pk, token in before.items()} == plaintexts

    assert credentials_rotate() == 2

    settings.ROUTIQ_ENCRYPTION_KEYS = [new_first_key]  # the old key can now be dropped
    for organization in (org_a, org_b):
        after = stored_ciphertext(organization)
        assert after != before[organization.pk]
        assert decrypt_secret(after) == plaintexts[organization.pk]
    with platform_access("test"):
        assert AuditLog.objects.get(action="credentials.rotated").changes == {"rotated": 2, "failed": []}


def test_rotate_credentials_command_prints_the_count(settings, org_a, org_b):
    settings.ROUTIQ_ENCRYPTION_KEYS = [new_key()]
    for organization in (org_a, org_b):
        credential_set(organization=organization, provider="chatwoot", secret=new_secret())
    out = io.StringIO()

    call_command("rotate_credentials", stdout=out)

    assert "Rotated 2 credential(s)." in out.getvalue()


# --- services: the secret never leaves encrypted -----------------------------------------------------


def test_credential_set_stores_ciphertext_and_last4_and_never_the_plaintext(key, org_a, caplog):
    caplog.set_level(logging.DEBUG)
    secret = new_secret()

    with CaptureQueriesContext(connection) as queries:  # logs every statement and its parameters
        credential = credential_set(
            organization=org_a, provider="cliniko", secret=secret, base_url="https://api.au1.cliniko.com/v1",
            account_id="acct-42", actor_label="test",
        )

    assert (credential.secret_last4, credential.account_id) == (secret[-4:], "acct-42")
    assert credential_secret(credential) == secret
    row = rows_as_text("api_credentials", org_a)
    assert credential.secret_ciphertext in row and secret not in row
    audit = rows_as_text("audit_logs", org_a)
    assert "credential.created" in audit and secret not in audit
    with bind_organization(org_a):
        changes = AuditLog.objects.get(action="credential.created", object_id=str(credential.pk)).changes
    assert changes["secret"] == "changed" and changes["after"]["base_url"] == "https://api.au1.cliniko.com/v1"
    assert "credential created" in caplog.text  # the capture works, so its absence below means something
    assert secret not in caplog.text
    assert queries.captured_queries and not any(secret in query["sql"] for query in queries.captured_queries)


def test_secret_none_keeps_the_stored_secret_and_base_url_none_keeps_the_settings(key, org_a):
    secret = new_secret()
    first = credential_set(organization=org_a, provider="chatwoot", secret=secret, base_url="https://a.example.com",
                           account_id="7")

    updated = credential_set(organization=org_a, provider="chatwoot", secret=None)

    assert updated.pk == first.pk
    assert updated.secret_ciphertext == first.secret_ciphertext and updated.secret_last4 == secret[-4:]
    assert (updated.base_url, updated.account_id) == ("https://a.example.com", "7")
    assert credential_secret(credential_get(organization=org_a, provider="chatwoot")) == secret


@pytest.mark.parametrize("change", [{"base_url": "https://b.example.com"}, {"account_id": "8"},
                                    {"base_url": ""}])
def test_a_new_destination_without_the_secret_is_refused(key, org_a, change):
    secret = new_secret()
    credential_set(organization=org_a, provider="chatwoot", secret=secret, base_url="https://a.example.com",
                   account_id="7")

    with pytest.raises(ValidationError) as excinfo:
        credential_set(organization=org_a, provider="chatwoot", secret=None, **change)

    assert "re-enter the access token" in " ".join(excinfo.value.message_dict["secret"])
    stored = credential_get(organization=org_a, provider="chatwoot")
    assert (stored.base_url, stored.account_id) == ("https://a.example.com", "7")
    assert credential_secret(stored) == secret


def test_a_new_destination_with_the_secret_is_saved_and_audited(key, org_a):
    first = credential_set(organization=org_a, provider="cliniko", secret=new_secret(),
                           base_url="https://a.example.com")

    credential_set(organization=org_a, provider="cliniko", secret=new_secret(), base_url="https://b.example.com")

    with bind_organization(org_a):
        assert ApiCredential.objects.get(pk=first.pk).base_url == "https://b.example.com"
        changes = AuditLog.objects.get(action="credential.updated", object_id=str(first.pk)).changes
    assert changes == {
        "provider": "cliniko", "fields": ["base_url", "secret"], "secret": "changed",
        "before": {"base_url": "https://a.example.com"}, "after": {"base_url": "https://b.example.com"},
    }


def test_replacing_the_secret_is_audited_as_changed_only(key, org_a):
    credential_set(organization=org_a, provider="manychat", secret=new_secret())
    replacement = new_secret()

    credential = credential_set(organization=org_a, provider="manychat", secret=replacement)

    assert credential_secret(credential) == replacement
    with bind_organization(org_a):
        changes = AuditLog.objects.get(action="credential.updated", object_id=str(credential.pk)).changes
    assert changes["fields"] == ["secret"] and changes["secret"] == "changed"
    assert replacement not in rows_as_text("audit_logs", org_a)


def test_an_unchanged_update_writes_nothing(key, org_a):
    first = credential_set(organization=org_a, provider="cliniko", secret=new_secret(),
                           base_url="https://a.example.com")

    credential_set(organization=org_a, provider="cliniko", secret=None, base_url="https://a.example.com")

    with bind_organization(org_a):
        assert not AuditLog.objects.filter(action="credential.updated").exists()
        stored = ApiCredential.objects.get(pk=first.pk)
    assert (stored.secret_ciphertext, stored.updated_at) == (first.secret_ciphertext, first.updated_at)


@pytest.mark.parametrize(
    ("fields", "error_field"),
    [
        ({"provider": "stripe", "secret": "x" * 12}, "provider"),
        ({"provider": "cliniko", "secret": None}, "secret"),  # a new credential needs one
        ({"provider": "cliniko", "secret": "   "}, "secret"),
        ({"provider": "cliniko", "secret": "x" * 12, "base_url": "http://api.example.com"}, "base_url"),
        ({"provider": "cliniko", "secret": "x" * 12, "base_url": "https://user:pw@api.example.com"}, "base_url"),
        ({"provider": "cliniko", "secret": "x" * 12, "base_url": "not a url"}, "base_url"),
    ],
)
def test_invalid_input_is_refused_and_nothing_is_stored(key, org_a, fields, error_field):
    with pytest.raises(ValidationError) as excinfo:
        credential_set(organization=org_a, **fields)

    assert error_field in excinfo.value.message_dict
    with bind_organization(org_a):
        assert not ApiCredential.objects.exists()


def test_plain_http_and_local_chatwoot_urls_need_the_operator_setting(key, org_a, settings):
    settings.VENDOR_ALLOW_PRIVATE_NETWORKS = True

    credential = credential_set(
        organization=org_a, provider="chatwoot", secret=new_secret(), base_url="http://127.0.0.1:8765/api"
    )

    assert credential.base_url == "http://127.0.0.1:8765/api"


@pytest.mark.parametrize("base_url", [
    "http://127.0.0.1:8765/api", "http://chat.example.com", "https://127.0.0.1:8765", "https://10.1.2.3",
    "https://172.16.0.9", "https://192.168.0.2", "https://169.254.169.254", "https://[::1]:8443",
    "https://[::ffff:127.0.0.1]", "https://100.64.0.1", "https://localhost:8443", "https://chat.localhost",
])
def test_a_chatwoot_base_url_must_be_public_https(key, org_a, settings, base_url):
    settings.VENDOR_ALLOW_PRIVATE_NETWORKS = False

    with pytest.raises(ValidationError) as excinfo:
        credential_set(organization=org_a, provider="chatwoot", secret=new_secret(), base_url=base_url,
                       account_id="7")

    assert "base_url" in excinfo.value.message_dict
    assert credential_get(organization=org_a, provider="chatwoot") is None


@pytest.mark.parametrize("account_id", ["../1", "1/../../2", "0", "-1", "1.0", "07", "abc", "1 2", "١٢"])
def test_a_chatwoot_account_id_is_a_positive_integer(key, org_a, account_id):
    with pytest.raises(ValidationError) as excinfo:
        credential_set(organization=org_a, provider="chatwoot", secret=new_secret(),
                       base_url="https://chat.example.com", account_id=account_id)

    assert "account_id" in excinfo.value.message_dict
    assert credential_get(organization=org_a, provider="chatwoot") is None


def test_credential_delete_is_audited(key, org_a):
    credential = credential_set(organization=org_a, provider="cliniko", secret=new_secret())

    assert credential_delete(organization=org_a, provider="cliniko", actor_label="test") is True

    assert credential_get(organization=org_a, provider="cliniko") is None
    assert credential_delete(organization=org_a, provider="cliniko") is False
    with bind_organization(org_a):
        deleted = AuditLog.objects.get(action="credential.deleted")
    assert (deleted.object_id, deleted.changes) == (str(credential.pk), {"provider": "cliniko"})


# --- isolation -------------------------------------------------------------------------------------


def test_a_bound_organization_cannot_reach_another_organizations_credential(key, org_a, org_b):
    credential_set(organization=org_b, provider="cliniko", secret=new_secret())
    assert credential_get(organization=org_b, provider="cliniko") is not None  # it exists, for B

    with bind_organization(org_a):
        assert credential_get(organization=org_b, provider="cliniko") is None
        with platform_access("test"):  # even through the platform door, A's code does not get B's credential
            assert credential_get(organization=org_b, provider="cliniko") is None
        with connection.cursor() as cursor:  # and RLS hides B's rows from A's raw SQL
            cursor.execute("SELECT count(*) FROM api_credentials WHERE organization_id = %s", [org_b.pk])
            assert cursor.fetchone()[0] == 0
        assert not ApiCredential.objects.filter(organization=org_b).exists()
        with pytest.raises(NoOrganizationBound):
            credential_set(organization=org_b, provider="cliniko", secret=new_secret())
        with pytest.raises(NoOrganizationBound):
            credential_delete(organization=org_b, provider="cliniko")
    with bind_organization(org_b):
        assert ApiCredential.objects.filter(organization=org_b).count() == 1


# --- set_credential command ------------------------------------------------------------------------


def test_set_credential_command_round_trip(key, org_a):
    secret = new_secret()
    out, err = io.StringIO(), io.StringIO()

    call_command("set_credential", org_a.clerk_org_id, "cliniko", secret=secret,
                 base_url="https://api.au1.cliniko.com/v1", account_id="acct-7", stdout=out, stderr=err)

    assert secret[-4:] in out.getvalue()
    assert secret not in out.getvalue() + err.getvalue() and secret[:-4] not in out.getvalue()
    credential = credential_get(organization=org_a, provider="cliniko")
    assert credential_secret(credential) == secret
    assert (credential.base_url, credential.account_id) == ("https://api.au1.cliniko.com/v1", "acct-7")


def test_set_credential_reads_the_secret_from_stdin_and_keeps_unset_options(key, org_a):
    call_command("set_credential", org_a.clerk_org_id, "chatwoot", secret=new_secret(),
                 base_url="https://chat.example.com", stdout=io.StringIO(), stderr=io.StringIO())
    secret, out = new_secret(), io.StringIO()

    call_command("set_credential", org_a.clerk_org_id, "chatwoot", secret_stdin=True,
                 stdin=io.StringIO(secret + "\n"), stdout=out)

    assert secret[-4:] in out.getvalue() and secret not in out.getvalue()
    credential = credential_get(organization=org_a, provider="chatwoot")
    assert credential_secret(credential) == secret
    assert credential.base_url == "https://chat.example.com"


def test_set_credential_refuses_a_new_base_url_without_the_secret(key, org_a):
    secret = new_secret()
    call_command("set_credential", org_a.clerk_org_id, "cliniko", secret=secret, stdout=io.StringIO(),
                 stderr=io.StringIO())

    with pytest.raises(CommandError, match="re-enter"):
        call_command("set_credential", org_a.clerk_org_id, "cliniko", base_url="https://cliniko.example.net/v1",
                     stdout=io.StringIO(), stderr=io.StringIO())

    credential = credential_get(organization=org_a, provider="cliniko")
    assert credential.base_url == "" and credential_secret(credential) == secret


def test_set_credential_refuses_an_unknown_organization(key):
    with pytest.raises(CommandError, match="No organization"):
        call_command("set_credential", "org_missing", "cliniko", secret=new_secret(), stdout=io.StringIO(),
                     stderr=io.StringIO())
