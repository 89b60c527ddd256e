"""Vendor clients built from a stored credential and the operator's settings, and the "Test connection"
report for people (the Integrations page, the admin action).

Where each credential is sent: Cliniko to its key's shard unless the operator overrides it
(CLINIKO_API_URL, or a base URL set with ``manage.py set_credential``); ManyChat to MANYCHAT_API_URL (or the
operator's base URL); Chatwoot to the clinic's own server, as an untrusted destination.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings

from routiq.http import VendorError
from tenants.credentials import credential_secret
from tenants.crypto import CredentialDecryptionError
from tenants.models import ApiCredential, Provider

# A person is waiting for the answer: no retries, short timeouts.
QUICK = {"timeout": (3, 5), "max_retries": 0, "max_rate_limit_retries": 0}


class ConnectionUnavailable(Exception):
    """The credential lacks what the vendor needs (e.g. Chatwoot's base URL): it cannot be tried yet."""


def vendor_client(credential: ApiCredential, **http_options: Any) -> Any:
    """The provider's client for ``credential``. Raises ConnectionUnavailable, CredentialDecryptionError."""
    builders: dict[str, Callable[[ApiCredential, dict[str, Any]], Any]] = {
        Provider.CLINIKO: _cliniko, Provider.CHATWOOT: _chatwoot, Provider.MANYCHAT: _manychat}
    return builders[credential.provider](credential, http_options)


def connection_report(credential: ApiCredential) -> tuple[bool | None, str]:
    """(ok, message) for people: True works, False failed, None cannot be tested yet. The message names the
    kind of failure and the HTTP status; never the vendor's body, which a page must not echo."""
    label = credential.get_provider_display()
    try:
        vendor_client(credential, **QUICK).check_connection()
    except ConnectionUnavailable as exc:
        return None, str(exc)
    except VendorError as exc:
        return False, f"{label} connection failed: {exc.summary}"
    except CredentialDecryptionError:
        return False, f"{label} connection failed: the stored secret cannot be decrypted; save it again"
    return True, f"{label} connection works."


def _cliniko(credential: ApiCredential, http_options: dict[str, Any]) -> Any:
    from patients.clients.cliniko import ClinikoClient

    # credential.base_url is the operator's (set_credential, admin); clinics cannot set it.
    return ClinikoClient(credential_secret(credential), contact_email=settings.CLINIKO_CONTACT_EMAIL,
                         base_url=credential.base_url or settings.CLINIKO_API_URL or None, **http_options)


def _chatwoot(credential: ApiCredential, http_options: dict[str, Any]) -> Any:
    from messaging.clients.chatwoot import ChatwootClient

    if not credential.base_url or not credential.account_id:
        raise ConnectionUnavailable("Chatwoot needs its base URL and account id to be tested.")
    try:
        return ChatwootClient(credential_secret(credential), base_url=credential.base_url,
                              account_id=credential.account_id,
                              allow_private_networks=settings.VENDOR_ALLOW_PRIVATE_NETWORKS, **http_options)
    except ValueError as exc:  # an account id stored before it was validated
        raise ConnectionUnavailable(f"Chatwoot: {exc}; save the credential again.") from None


def _manychat(credential: ApiCredential, http_options: dict[str, Any]) -> Any:
    from messaging.clients.manychat import ManyChatClient

    return ManyChatClient(credential_secret(credential),
                          base_url=credential.base_url or settings.MANYCHAT_API_URL, **http_options)
