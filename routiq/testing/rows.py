"""Minimal rows for every table that carries organization_id, for the isolation tests.

Each builder returns an *unsaved* instance for the organization bound by the caller, so a test can save it
under a binding of its choice (including the wrong one, to prove RLS refuses it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from django.db import models
from django.utils import timezone

from billing.models import Invoice, StripeEvent
from messaging.models import Conversation, Message
from patients.models import ActivePatient, Appointment, Contact, ContactLinkDecision, ContactMatchCandidate
from tenants.models import (
    ApiCredential,
    AuditLog,
    Organization,
    OrganizationMember,
    SyncCheckpoint,
    SyncLog,
    User,
)

_sequence = itertools.count(1)


def contact(organization: Organization) -> Contact:
    n = next(_sequence)
    return Contact(organization=organization, first_name=f"Pat{n}", last_name="Example", cliniko_patient_id=n)


def appointment(organization: Organization) -> Appointment:
    return Appointment(organization=organization, cliniko_appointment_id=next(_sequence), starts_at=timezone.now())


def active_patient(organization: Organization) -> ActivePatient:
    owner = contact(organization)
    owner.save()
    return ActivePatient(organization=organization, contact=owner, appointment_count=1)


def conversation(organization: Organization) -> Conversation:
    return Conversation(organization=organization, provider="chatwoot", external_id=str(next(_sequence)))


def message(organization: Organization) -> Message:
    thread = conversation(organization)
    thread.save()
    return Message(
        organization=organization, conversation=thread, provider="chatwoot", external_id=str(next(_sequence)),
        direction="inbound", content="Hello", sent_at=timezone.now(),
    )


def contact_match_candidate(organization: Organization) -> ContactMatchCandidate:
    lead, patient = contact(organization), contact(organization)
    lead.cliniko_patient_id = None
    lead.save()
    patient.save()
    return ContactMatchCandidate(organization=organization, lead=lead, patient=patient, reason="phone")


def contact_link_decision(organization: Organization) -> ContactLinkDecision:
    return ContactLinkDecision(organization=organization, provider="chatwoot", external_id=str(next(_sequence)),
                               linked=True)


def organization_member(organization: Organization) -> OrganizationMember:
    user = User.objects.create(username=f"member{next(_sequence)}")
    return OrganizationMember(organization=organization, user=user)


def api_credential(organization: Organization) -> ApiCredential:
    return ApiCredential(organization=organization, provider="cliniko", secret_ciphertext="not-a-secret")


def sync_log(organization: Organization) -> SyncLog:
    return SyncLog(organization=organization, provider="cliniko", resource="patients")


def sync_checkpoint(organization: Organization) -> SyncCheckpoint:
    return SyncCheckpoint(organization=organization, provider="cliniko", stream=f"stream{next(_sequence)}")


def audit_log(organization: Organization) -> AuditLog:
    return AuditLog(organization=organization, action="test.event")


def stripe_event(organization: Organization) -> StripeEvent:
    return StripeEvent(id=f"evt_test_{next(_sequence)}", organization=organization, type="invoice.paid",
                       created=timezone.now(), payload={})


def invoice(organization: Organization) -> Invoice:
    now = timezone.now()
    return Invoice(organization=organization, stripe_invoice_id=f"in_test_{next(_sequence)}", invoice_created=now,
                   state_at=now)


TENANT_TABLES: dict[str, Callable[[Organization], models.Model]] = {
    "contacts": contact,
    "appointments": appointment,
    "active_patients": active_patient,
    "conversations": conversation,
    "messages": message,
    "contact_match_candidates": contact_match_candidate,
    "contact_link_decisions": contact_link_decision,
}
PUBLIC_TABLES: dict[str, Callable[[Organization], models.Model]] = {
    "organization_members": organization_member,
    "api_credentials": api_credential,
    "sync_logs": sync_log,
    "sync_checkpoints": sync_checkpoint,
    "audit_logs": audit_log,
    "billing_stripe_events": stripe_event,
    "billing_invoices": invoice,
}
# Maintained by a trigger on contacts (patients/migrations/0004); isolation is tested through contacts.
TRIGGER_MAINTAINED_TABLES = ["contact_search_terms"]
# Materialized views have no Row Level Security: each is read only through its security-barrier view
# (tenants/rls/matviews.py), listed here with the schema function that refreshes it. A materialized view or a
# view over one that is missing here fails test_row_level_security.
SECURITY_BARRIER_VIEWS: dict[str, tuple[str, str]] = {
    # view: (materialized view, refresh function)
    "active_patients_summary": ("mv_active_patients_summary", "refresh_patient_metrics"),
    "active_patients_monthly": ("mv_active_patients_monthly", "refresh_patient_metrics"),
    "conversation_metrics_daily": ("mv_conversation_metrics_daily", "refresh_conversation_metrics"),
}
