"""'Test connection' for a stored credential: one cheap authenticated call to the vendor, no retries.

Cliniko: GET /patients?per_page=1. Chatwoot: GET /api/v1/accounts/{account_id}/contacts with the
``api_access_token`` header. ManyChat: GET /fb/page/getInfo with the Bearer token.

Used by the Integrations page and the admin action, where a person is waiting for the answer."""

from __future__ import annotations

from django.conf import settings

from routiq.http import VendorError, VendorHttpClient, VendorResponseError
from tenants.credentials import credential_secret
from tenants.crypto import CredentialDecryptionError
from tenants.models import ApiCredential, Provider


class ConnectionCheckUnavailable(Exception):
    pass


QUICK = {"timeout": (3, 5), "max_retries": 0, "max_rate_limit_retries": 0}


def check_connection(credential: ApiCredential) -> None:
    """Return if the vendor accepts the credential; raise VendorError (or decryption errors) if not."""
    checks = {Provider.CLINIKO: check_cliniko, Provider.CHATWOOT: check_chatwoot, Provider.MANYCHAT: check_manychat}
    checks[credential.provider](credential, credential_secret(credential))


def check_cliniko(credential: ApiCredential, secret: str) -> None:
    from patients.clients.cliniko import ClinikoClient

    ClinikoClient(secret, contact_email=settings.CLINIKO_CONTACT_EMAIL,
                  base_url=credential.base_url or settings.CLINIKO_API_URL or None, **QUICK).check_connection()


def check_chatwoot(credential: ApiCredential, secret: str) -> None:
    """Chatwoot is self-hosted or cloud: the base URL and the account id are part of the credential."""
    if not credential.base_url or not credential.account_id:
        raise ConnectionCheckUnavailable("Chatwoot needs its base URL and account id to be tested.")
    client = VendorHttpClient(provider="chatwoot", base_url=credential.base_url, secrets=[secret],
                              headers={"api_access_token": secret, "Accept": "application/json"}, **QUICK)
    client.get_json(f"api/v1/accounts/{credential.account_id}/contacts", params={"page": 1})


def check_manychat(credential: ApiCredential, secret: str) -> None:
    client = VendorHttpClient(provider="manychat", base_url=credential.base_url or settings.MANYCHAT_API_URL,
                              secrets=[secret], headers={"Authorization": f"Bearer {secret}"}, **QUICK)
    body = client.get_json("fb/page/getInfo")
    if body.get("status") != "success":
        raise VendorResponseError("manychat", "ManyChat did not answer with status 'success'.")


def connection_report(credential: ApiCredential) -> tuple[bool | None, str]:
    """(ok, message) for people: True works, False failed, None cannot be tested yet."""
    label = credential.get_provider_display()
    try:
        check_connection(credential)
    except ConnectionCheckUnavailable as exc:
        return None, str(exc)
    except (VendorError, CredentialDecryptionError) as exc:
        return False, f"{label} connection failed: {exc}"
    return True, f"{label} connection works."
