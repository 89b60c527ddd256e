"""Linking a patient to their ManyChat subscriber, found by the patient's phone (E.164) then email.

ManyChat sends no contact events, so a patient meets their subscriber either when a flow's External Request
arrives (messaging/webhooks.py, through matching) or when this service asks ManyChat who has the patient's
phone or email. The lookups happen before any transaction (a slow vendor never holds a database lock);
the link itself obeys the same rules as matching: a unique answer only, never an identity already held by
another patient, never against a clinic admin's decision.
"""

from __future__ import annotations

import logging

from django.db import transaction

from messaging.clients.manychat import ManyChatClient
from messaging.matching import ExternalIdentity, identity_assign, phone_e164
from patients.models import Contact, ContactLinkDecision
from tenants.models import Organization, Provider
from tenants.rls.binding import require_organization_id

logger = logging.getLogger(__name__)


def manychat_subscriber_link(*, organization: Organization, contact: Contact, client: ManyChatClient) -> str | None:
    """The patient's subscriber id once linked (already, or now); None when ManyChat has no single
    subscriber for them or the link is not allowed."""
    if require_organization_id() != str(organization.pk):
        raise RuntimeError("The organization linked in must be the bound one.")
    if contact.manychat_subscriber_id:
        return contact.manychat_subscriber_id
    if contact.cliniko_patient_id is None:
        return None  # leads come from ManyChat (or Chatwoot) in the first place
    found = _lookup(client, contact, organization.country)
    if len(found) != 1:
        logger.info("manychat link organization_id=%s contact_id=%s: %d subscribers found",
                    organization.pk, contact.pk, len(found))
        return None
    subscriber_id = str(found[0].get("id") or "").strip()
    if not subscriber_id.isdigit():
        return None
    with transaction.atomic():
        patient = Contact.objects.select_for_update().get(organization=organization, pk=contact.pk)
        decision = ContactLinkDecision.objects.filter(
            organization=organization, provider=Provider.MANYCHAT, external_id=subscriber_id).first()
        if decision is not None and decision.linked and decision.patient_id != patient.pk:
            return None  # a clinic admin tied this subscriber to someone else
        if decision is not None and not decision.linked and decision.patient_id == patient.pk:
            return None  # a clinic admin said "not this patient"
        holder = Contact.objects.filter(organization=organization, manychat_subscriber_id=subscriber_id).first()
        if patient.manychat_subscriber_id or (holder is not None and holder.cliniko_patient_id is not None):
            return patient.manychat_subscriber_id  # never take a subscriber another patient holds
        identity_assign(organization=organization, provider=Provider.MANYCHAT, external_id=subscriber_id,
                        holder=holder, patient=patient)
        contact.manychat_subscriber_id = subscriber_id
    return subscriber_id


def _lookup(client: ManyChatClient, contact: Contact, region: str) -> list[dict]:
    phone = contact.phone_e164 or phone_e164(contact.phone_raw, region)
    if phone:
        found = client.subscribers_by_system_field(phone=phone)
        if found:
            return found
    if contact.email.strip():
        return client.subscribers_by_system_field(email=contact.email.strip())
    return []


def subscriber_identity(subscriber: dict) -> ExternalIdentity:
    """A ManyChat subscriber (getInfo, findBySystemField) as matching sees it."""
    name = " ".join(part for part in (subscriber.get("first_name"), subscriber.get("last_name")) if part) or str(
        subscriber.get("name") or "")
    return ExternalIdentity(Provider.MANYCHAT.value, str(subscriber.get("id") or ""), name,
                            str(subscriber.get("phone") or subscriber.get("whatsapp_phone") or ""),
                            str(subscriber.get("email") or ""))
