"""'Test connection' for a stored credential: one cheap authenticated call to the vendor, no retries.

Used by the Integrations page and the admin action, where a person is waiting for the answer."""

from __future__ import annotations

from django.conf import settings

from routiq.http import VendorError
from tenants.credentials import credential_secret
from tenants.crypto import CredentialDecryptionError
from tenants.models import ApiCredential, Provider


class ConnectionCheckUnavailable(Exception):
    pass


def check_connection(credential: ApiCredential) -> None:
    """Return if the vendor accepts the credential; raise VendorError (or decryption errors) if not."""
    if credential.provider != Provider.CLINIKO:
        label = credential.get_provider_display()
        raise ConnectionCheckUnavailable(f"Testing a {label} connection is not available yet.")
    from patients.clients.cliniko import ClinikoClient

    ClinikoClient(
        credential_secret(credential), contact_email=settings.CLINIKO_CONTACT_EMAIL,
        base_url=credential.base_url or settings.CLINIKO_API_URL or None, timeout=(3, 5), max_retries=0,
        max_rate_limit_retries=0,
    ).check_connection()


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
