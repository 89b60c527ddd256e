"""Small builders for page tests: rows made with the models directly (bound to their organization), so the
page tests do not depend on the sync. Counters are set as the message services keep them."""

from __future__ import annotations

import itertools
from datetime import datetime

from messaging.models import Conversation, Message
from patients.models import Appointment, Contact, ContactMatchCandidate
from tenants.rls.binding import bind_organization

SEQUENCE = itertools.count(1)


def contact(organization, first_name="Ava", last_name="Smith", *, patient=True, **fields) -> Contact:
    with bind_organization(organization):
        return Contact.objects.create(
            organization=organization, first_name=first_name, last_name=last_name,
            cliniko_patient_id=next(SEQUENCE) if patient else None, **fields)


def conversation(organization, who: Contact | None = None, *, provider="chatwoot", channel="Channel::Whatsapp",
                 **fields) -> Conversation:
    with bind_organization(organization):
        return Conversation.objects.create(organization=organization, contact=who, provider=provider,
                                           external_id=str(next(SEQUENCE)), channel=channel, **fields)


def message(organization, thread: Conversation, sent_at: datetime, content="Hello", *, direction="inbound",
            private=False, **fields) -> Message:
    with bind_organization(organization):
        row = Message.objects.create(organization=organization, conversation=thread, provider=thread.provider,
                                     external_id=str(next(SEQUENCE)), direction=direction, private=private,
                                     content=content, sent_at=sent_at, **fields)
        if thread.last_message_at is None or sent_at >= thread.last_message_at:
            thread.last_message_at, thread.last_message_preview = sent_at, content[:200]
        thread.message_count += 1
        thread.save(update_fields=["last_message_at", "last_message_preview", "message_count"])
        return row


def appointment(organization, who: Contact, starts_at: datetime, **fields) -> Appointment:
    with bind_organization(organization):
        return Appointment.objects.create(organization=organization, contact=who, starts_at=starts_at,
                                          cliniko_appointment_id=next(SEQUENCE), **fields)


def match_candidate(organization, lead: Contact, patient: Contact, reason="phone", **fields) -> ContactMatchCandidate:
    with bind_organization(organization):
        return ContactMatchCandidate.objects.create(organization=organization, lead=lead, patient=patient,
                                                    reason=reason, **fields)
