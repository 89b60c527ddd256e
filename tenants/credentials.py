"""Services and selectors for vendor credentials (ApiCredential): one per organization and provider.

The secret is encrypted before it reaches the database (tenants.crypto) and never written to an audit row
or a log line; only its last four characters are kept in clear, for display. Every function works for the
bound organization: it binds ``organization`` when nothing is bound, and refuses to act for another one.

A secret is bound to where it is sent: changing the base URL or the account id of a stored credential needs
the secret again, so whoever redirects a credential must know it. A Chatwoot base URL may be the clinic's
own server, so it must be https and, as far as can be told without DNS, public (routiq.http checks the
resolved address again on every request); the Chatwoot account id is a positive integer.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction

from routiq.fields import max_length
from routiq.http import address_refusal
from tenants.audit import audit_record
from tenants.crypto import CredentialDecryptionError, decrypt_secret, encrypt_secret, last_four, rotate_secret
from tenants.models import ApiCredential, Organization, Provider, User
from tenants.rls.binding import (
    NoOrganizationBound,
    bind_organization,
    bound_organization_id,
    platform_access,
    write_alias,
)

logger = logging.getLogger(__name__)

# Plain http only for local stand-ins of a vendor API (tests, development).
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
SETTINGS_FIELDS = ("base_url", "account_id")
# Chatwoot account ids are database ids: digits, no sign, no leading zero (and so no "../").
ACCOUNT_ID_RE = re.compile(r"[1-9][0-9]{0,18}")
REENTER_SECRET = "The base URL or account id changed: re-enter the access token."


# --- Selectors -------------------------------------------------------------------------------------


def credential_get(*, organization: Organization, provider: str) -> ApiCredential | None:
    """The organization's credential for ``provider``; None if there is none or another one is bound."""
    if not _is_bound_or_unbound(organization):
        logger.warning("credential_get for organization_id=%s refused: another organization is bound",
                       organization.pk)
        return None
    with _organization_scope(organization):
        return ApiCredential.objects.filter(organization=organization, provider=provider).first()


def credential_secret(credential: ApiCredential) -> str:
    """The decrypted secret. Raises CredentialDecryptionError if no configured key can decrypt it."""
    return decrypt_secret(credential.secret_ciphertext)


# --- Services --------------------------------------------------------------------------------------


def credential_set(
    *, organization: Organization, provider: str, secret: str | None, base_url: str | None = None,
    account_id: str | None = None, actor: User | None = None, actor_label: str = "", request=None,
) -> ApiCredential:
    """Create or replace the credential. ``secret=None`` keeps the stored secret, ``base_url=None`` and
    ``account_id=None`` keep the stored values ('' for a new credential). A changed base URL or account id
    without a new secret is refused."""
    with _organization_scope(organization), transaction.atomic(using=write_alias()):
        credential = (
            ApiCredential.objects.select_for_update().filter(organization=organization, provider=provider).first()
        )
        created = credential is None
        stored = {field: getattr(credential, field) if credential else "" for field in SETTINGS_FIELDS}
        base_url = stored["base_url"] if base_url is None else base_url.strip()
        account_id = stored["account_id"] if account_id is None else account_id.strip()
        validate_credential_fields(provider=provider, secret=secret, base_url=base_url, account_id=account_id)
        user = actor if actor is not None and actor.is_authenticated else None
        if credential is None:  # created
            if secret is None:
                raise ValidationError({"secret": "A new credential needs a secret."})
            credential = ApiCredential(organization=organization, provider=provider, created_by=user)
        before = stored
        after = {"base_url": base_url, "account_id": account_id}
        changed = sorted(field for field in SETTINGS_FIELDS if created or before[field] != after[field])
        if changed and secret is None:
            # Otherwise anyone who may edit the settings could send the stored secret to a host of their choosing.
            raise ValidationError({"secret": REENTER_SECRET})
        if secret is not None:
            credential.secret_ciphertext, credential.secret_last4 = encrypt_secret(secret), last_four(secret)
            changed = sorted([*changed, "secret"])
        if not changed:
            return credential
        credential.base_url, credential.account_id, credential.updated_by = base_url, account_id, user
        credential.save()
        # Field names and non-secret values only; the secret is recorded as "changed", never its value.
        changes: dict = {"provider": provider, "fields": changed,
                         "after": {field: after[field] for field in changed if field in after}}
        if not created:
            changes["before"] = {field: before[field] for field in changed if field in before}
        if "secret" in changed:
            changes["secret"] = "changed"
        audit_record(
            action="credential.created" if created else "credential.updated", organization=organization,
            actor=actor, actor_label=actor_label, object_type="api_credential", object_id=credential.pk,
            changes=changes, request=request,
        )
    logger.info("credential %s organization_id=%s provider=%s fields=%s",
                "created" if created else "updated", organization.pk, provider, ",".join(changed))
    return credential


def credential_delete(
    *, organization: Organization, provider: str, actor: User | None = None, actor_label: str = "", request=None
) -> bool:
    """Delete the credential; True if there was one."""
    with _organization_scope(organization), transaction.atomic(using=write_alias()):
        credential = ApiCredential.objects.filter(organization=organization, provider=provider).first()
        if credential is None:
            return False
        credential_id = credential.pk
        credential.delete()
        audit_record(
            action="credential.deleted", organization=organization, actor=actor, actor_label=actor_label,
            object_type="api_credential", object_id=credential_id, changes={"provider": provider}, request=request,
        )
    logger.info("credential deleted organization_id=%s provider=%s", organization.pk, provider)
    return True


def credentials_rotate(*, actor_label: str = "system") -> int:
    """Re-encrypt every organization's credentials under the first key; returns how many were rotated.

    Runs through the platform door so inactive organizations (which cannot be bound) are rotated too:
    once the old key is dropped, anything left behind would be unreadable. Each credential commits on its
    own, so a failure keeps the work done so far and a re-run is safe. Credentials that no key decrypts
    are skipped and reported together at the end, loudly.
    """
    rotated, failed = 0, []
    with platform_access("rotate credentials"):
        credential_ids = list(ApiCredential.objects.order_by("created_at").values_list("pk", flat=True))
        for credential_id in credential_ids:
            with transaction.atomic(using=write_alias()):
                credential = ApiCredential.objects.select_for_update().filter(pk=credential_id).first()
                if credential is None:  # deleted since we listed it
                    continue
                try:
                    credential.secret_ciphertext = rotate_secret(credential.secret_ciphertext)
                except CredentialDecryptionError:
                    logger.error("credential rotation failed credential_id=%s organization_id=%s provider=%s",
                                 credential.pk, credential.organization_id, credential.provider)
                    failed.append(str(credential.pk))
                    continue
                credential.save(update_fields=["secret_ciphertext", "updated_at"])
                rotated += 1
        with transaction.atomic(using=write_alias()):
            # A platform event (no organization): only the platform door admits this row.
            audit_record(action="credentials.rotated", organization=None, actor_label=actor_label,
                         changes={"rotated": rotated, "failed": failed})
    logger.info("credentials rotated count=%s failed=%s", rotated, len(failed))
    if failed:
        raise CredentialDecryptionError(
            f"{len(failed)} credential(s) could not be decrypted with any configured key and were not rotated "
            f"({', '.join(failed)}); {rotated} were rotated."
        )
    return rotated


# --- Validation ------------------------------------------------------------------------------------


def validate_credential_fields(*, provider: str, secret: str | None, base_url: str, account_id: str) -> None:
    """Raise ValidationError (messages never include the secret)."""
    errors: dict[str, str] = {}
    if provider not in Provider.values:
        errors["provider"] = f"Unknown provider; expected one of {', '.join(Provider.values)}."
    if secret is not None and not secret.strip():
        errors["secret"] = "The secret must not be empty."
    if base_url and (message := base_url_error(base_url, provider=provider)):
        errors["base_url"] = message
    if len(account_id) > max_length(ApiCredential, "account_id"):
        errors["account_id"] = "The account id is too long."
    elif account_id and (message := account_id_error(account_id, provider=provider)):
        errors["account_id"] = message
    if errors:
        raise ValidationError(errors)


def account_id_error(account_id: str, *, provider: str) -> str:
    """Why ``account_id`` is refused, or '' (it goes into the vendor's URL path, so its type matters)."""
    if provider == Provider.CHATWOOT and not ACCOUNT_ID_RE.fullmatch(account_id):
        return "The Chatwoot account id is a positive whole number."
    return ""


def base_url_error(base_url: str, *, provider: str) -> str:
    """Why ``base_url`` is refused, or '' if it is acceptable."""
    if len(base_url) > max_length(ApiCredential, "base_url"):
        return "The base URL is too long."
    try:
        URLValidator(schemes=["https", "http"])(base_url)
        parts = urlsplit(base_url)
    except (ValidationError, ValueError):
        return "Enter a valid URL."
    if parts.username or parts.password:
        # Userinfo would be a secret in clear text (and in the audit row).
        return "The base URL must not contain a user name or password."
    if provider == Provider.CHATWOOT:
        return clinic_base_url_error(parts.scheme, parts.hostname or "")
    # Other vendors' URLs are the operator's (settings, set_credential, Django admin).
    if parts.scheme == "https" or parts.hostname in LOCAL_HOSTS:
        return ""
    return "The base URL must use https (http is allowed only for localhost and 127.0.0.1)."


def clinic_base_url_error(scheme: str, host: str) -> str:
    """A base URL a clinic may choose: https and public. Host names are resolved (and checked again) by
    routiq.http when each request is made -- DNS can change after saving; here only what needs no DNS."""
    if settings.VENDOR_ALLOW_PRIVATE_NETWORKS:
        return ""
    if scheme != "https":
        return "The base URL must use https."
    public = "The base URL must be a public internet address, not a local or private one."
    if host == "localhost" or host.endswith(".localhost"):  # always loopback (RFC 6761)
        return public
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ""  # a name: judged by its addresses at request time
    return public if address_refusal(host) else ""


# --- Binding ---------------------------------------------------------------------------------------


def _is_bound_or_unbound(organization: Organization) -> bool:
    bound = bound_organization_id()
    return bound is None or bound == str(uuid.UUID(str(organization.pk)))


@contextlib.contextmanager
def _organization_scope(organization: Organization) -> Iterator[None]:
    """Bind ``organization`` if nothing is bound; refuse to act for it while another one is bound."""
    if bound_organization_id() is None:
        with bind_organization(organization):
            yield
    elif _is_bound_or_unbound(organization):
        yield
    else:
        raise NoOrganizationBound(f"Organization {organization.pk} is not the bound organization.")
