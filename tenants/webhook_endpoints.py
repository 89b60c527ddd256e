"""Where vendors deliver an organization's webhooks: /webhooks/<vendor>/<organization webhook token>/.

Chatwoot and ManyChat send no clinic identity we could trust, so the secret token in the URL names the
organization. A clinic admin sees the URLs on the Integrations page and can rotate the token (the old URLs
stop working at once). The vendors' own secrets — Chatwoot's webhook HMAC secret, a header value the
clinic puts into its ManyChat External Request — are kept on the provider's credential, encrypted like the
credential's secret, write-only: no page shows them again.
"""

from __future__ import annotations

import hmac
import logging
import re

from django.db import transaction

from routiq.fields import max_length
from tenants.audit import audit_record
from tenants.credentials import _organization_scope
from tenants.crypto import decrypt_secret, encrypt_secret
from tenants.models import ApiCredential, Organization, Provider, User, new_webhook_token
from tenants.rls.binding import write_alias

logger = logging.getLogger(__name__)

WEBHOOK_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+")  # secrets.token_urlsafe's alphabet
WEBHOOK_PROVIDERS = (Provider.CHATWOOT.value, Provider.MANYCHAT.value)


def organization_for_webhook_token(token: str) -> Organization | None:
    """The active organization whose webhook token is ``token``, else None.

    Organizations is a public table without RLS (it has no organization_id column), so no binding is needed
    to look one up. The row is found through the unique index, then the token compared in constant time, so
    an answer's timing says nothing about how much of a guess was right.
    """
    if not WEBHOOK_TOKEN_SHAPE.fullmatch(token or "") or len(token) > max_length(Organization, "webhook_token"):
        return None  # not one we could have made (a NUL would even fail the query): never looked up
    organization = Organization.objects.filter(webhook_token=token, is_active=True).first()
    if organization is None or not hmac.compare_digest(organization.webhook_token.encode(), token.encode()):
        return None
    return organization


def organization_webhook_token_rotate(
    *, organization: Organization, actor: User | None = None, actor_label: str = "", request=None
) -> str:
    """A new token; the old webhook URLs answer 404 from now on. Audited without the token itself."""
    with transaction.atomic(using=write_alias()):
        organization.webhook_token = new_webhook_token()
        organization.save(update_fields=["webhook_token", "updated_at"])
        audit_record(action="organization.webhook_token_rotated", organization=organization, actor=actor,
                     actor_label=actor_label, object_type="organization", object_id=organization.pk,
                     request=request)
    logger.info("webhook token rotated organization_id=%s", organization.pk)
    return organization.webhook_token


def credential_webhook_secret_set(
    *, organization: Organization, provider: str, secret: str, actor: User | None = None, actor_label: str = "",
    request=None,
) -> ApiCredential:
    """Store (or, with ``secret=''``, remove) the provider's webhook secret on its credential."""
    if provider not in WEBHOOK_PROVIDERS:
        raise ValueError(f"{provider} sends no webhooks to RoutIQ.")
    secret = secret.strip()
    with _organization_scope(organization), transaction.atomic(using=write_alias()):
        credential = ApiCredential.objects.select_for_update().get(organization=organization, provider=provider)
        credential.webhook_secret_ciphertext = encrypt_secret(secret) if secret else ""
        credential.save(update_fields=["webhook_secret_ciphertext", "updated_at"])
        audit_record(action="credential.webhook_secret_set" if secret else "credential.webhook_secret_removed",
                     organization=organization, actor=actor, actor_label=actor_label, object_type="api_credential",
                     object_id=credential.pk, changes={"provider": provider, "webhook_secret": "changed"},
                     request=request)
    return credential


def credential_webhook_secret(credential: ApiCredential | None) -> str:
    """The decrypted webhook secret, '' when none is configured (unsigned deliveries are then accepted)."""
    if credential is None or not credential.webhook_secret_ciphertext:
        return ""
    return decrypt_secret(credential.webhook_secret_ciphertext)
