"""Matching Chatwoot and ManyChat contacts to Cliniko patients.

A messaging identity (provider + external contact id) links to a patient by normalised E.164 phone, then by
email (case-insensitive). Exactly one free patient: linked. None: the identity becomes a contact of its own
(a *lead*, ``cliniko_patient_id`` NULL). Two or more: a lead plus ``ContactMatchCandidate`` rows, never a
guess — a clinic admin picks one. A clinic admin's link or unlink is a ``ContactLinkDecision`` that every
later run obeys, so it sticks across syncs.

An identity is held by at most one contact (the partial unique index per organization), and a patient holds
at most one identity per provider: matching never moves an identity off a patient, nor onto a patient that
already holds another one of the same provider.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import phonenumbers
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

from messaging.models import Conversation, Message, MessageDirection
from patients.models import Contact, ContactLinkDecision, ContactMatchCandidate, MatchReason
from tenants.audit import audit_record
from tenants.models import Organization, Provider
from tenants.rls.binding import require_organization_id

# The Contact column that holds each provider's external contact id.
IDENTITY_FIELDS = {Provider.CHATWOOT.value: "chatwoot_contact_id", Provider.MANYCHAT.value: "manychat_subscriber_id"}


class LinkConflict(ValueError):
    """The patient already holds another identity of the same provider: unlink it first."""


@dataclass(frozen=True)
class ExternalIdentity:
    """A vendor's contact as matching sees it. ``external_id``: Chatwoot contact id or ManyChat subscriber id."""

    provider: str
    external_id: str
    name: str = ""
    phone_raw: str = ""
    email: str = ""


def phone_e164(raw: str, region: str) -> str | None:
    """The number in E.164, a national number read in the organization's country; None when not a number."""
    if not raw:
        return None
    try:
        number = phonenumbers.parse(raw, region or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalised_email(raw: str) -> str:
    return (raw or "").strip().lower()


def _bound(organization: Organization) -> None:
    if require_organization_id() != str(organization.pk):
        raise RuntimeError("The organization matched in must be the bound one.")


def _field(provider: str) -> str:
    try:
        return IDENTITY_FIELDS[provider]
    except KeyError:
        raise ValueError(f"No messaging identity for provider {provider!r}.") from None


def _stored(provider: str, external_id: str):
    """The value as the contacts column stores it (Chatwoot ids are integers)."""
    return int(external_id) if provider == Provider.CHATWOOT else str(external_id)


def _split_name(name: str) -> tuple[str, str]:
    first, _, last = (name or "").strip().partition(" ")
    return first[:200], last.strip()[:200]


@dataclass
class _Identity:
    source: ExternalIdentity
    e164: str | None
    email: str


def contacts_for_identities(
    *, organization: Organization, identities: Iterable[ExternalIdentity]
) -> dict[str, uuid.UUID]:
    """str(external_id) -> Contact id for one provider's identities (one page of a sync, or one webhook).

    A handful of queries per call whatever its size: decisions, current holders and candidate patients are
    read in bulk; the writes are bulk too. Runs in the caller's transaction (the sync's page, the webhook's
    delivery) so a page's contacts and its checkpoint commit together.
    """
    _bound(organization)
    by_id: dict[str, _Identity] = {}
    for identity in identities:
        raw = str(identity.external_id).strip()
        if not raw:
            continue
        external_id = str(_stored(identity.provider, raw))  # "0042" and 42 are one Chatwoot contact
        by_id[external_id] = _Identity(identity, phone_e164(identity.phone_raw, organization.country),
                                       normalised_email(identity.email))
    if not by_id:
        return {}
    providers = {item.source.provider for item in by_id.values()}
    if len(providers) != 1:
        raise ValueError("contacts_for_identities takes one provider's identities per call.")
    (provider,) = providers
    field = _field(provider)
    stored = {external_id: _stored(provider, external_id) for external_id in by_id}

    contacts = Contact.objects.filter(organization=organization)
    holders = {str(getattr(c, field)): c for c in contacts.filter(**{f"{field}__in": list(stored.values())})}
    decisions = {d.external_id: d for d in ContactLinkDecision.objects.filter(
        organization=organization, provider=provider, external_id__in=list(by_id))}
    phones = {item.e164 for item in by_id.values() if item.e164}
    emails = {item.email for item in by_id.values() if item.email}
    patients = list(
        contacts.filter(cliniko_patient_id__isnull=False, deleted_at__isnull=True)
        .annotate(email_lower=Lower("email"))
        .filter(Q(phone_e164__in=phones) | Q(email_lower__in=emails))
    ) if phones or emails else []
    decided_patient_ids = {d.patient_id for d in decisions.values() if d.linked and d.patient_id}
    decided_patients = {c.pk: c for c in contacts.filter(pk__in=decided_patient_ids, deleted_at__isnull=True)}

    plan = _Plan(organization=organization, field=field)
    for external_id, item in by_id.items():
        plan.decide(external_id, stored[external_id], item, holders.get(external_id),
                    decisions.get(external_id), decided_patients, patients)
    return plan.apply()


class _Plan:
    """The writes one call makes, collected so they go to the database in bulk and in a safe order."""

    def __init__(self, *, organization: Organization, field: str):
        self.organization = organization
        self.field = field
        self.result: dict[str, uuid.UUID] = {}
        self.new_leads: list[tuple[str, Contact, list[tuple[Contact, str]]]] = []
        self.lead_updates: list[tuple[Contact, list[tuple[Contact, str]]]] = []
        self.moves: list[tuple[Contact | None, Contact, object]] = []  # (from lead, to patient, value)
        self.claimed: set[uuid.UUID] = set()  # patients given an identity in this call

    def _free(self, patient: Contact) -> bool:
        return getattr(patient, self.field) is None and patient.pk not in self.claimed

    def decide(self, external_id, value, item: _Identity, holder: Contact | None,
               decision: ContactLinkDecision | None, decided_patients: dict, patients: Sequence[Contact]) -> None:
        if decision is not None and decision.linked:
            target = decided_patients.get(decision.patient_id)
            if target is not None and (holder is None or holder.pk == target.pk or holder.cliniko_patient_id is None):
                if holder is not None and holder.pk == target.pk:
                    self.result[external_id] = target.pk
                    return
                if self._free(target):
                    self._move(external_id, holder, target, value)
                    return
        if holder is not None and holder.cliniko_patient_id is not None:
            self.result[external_id] = holder.pk  # linked already (automatically or by an admin): kept
            return
        refused = decision.patient_id if decision is not None and not decision.linked else None
        candidates, reason = _candidates(item, patients, refused)
        free = [patient for patient in candidates if self._free(patient)]
        if len(candidates) == 1 and len(free) == 1:
            self._move(external_id, holder, free[0], value)
            return
        listed = [(patient, reason) for patient in candidates]
        if holder is not None:
            _refresh_lead(holder, item)
            self.lead_updates.append((holder, listed))
            self.result[external_id] = holder.pk
            return
        lead = _new_lead(self.organization, item)
        setattr(lead, self.field, value)
        self.new_leads.append((external_id, lead, listed))
        self.result[external_id] = lead.pk

    def _move(self, external_id, holder: Contact | None, patient: Contact, value) -> None:
        self.claimed.add(patient.pk)
        self.moves.append((holder, patient, value))
        self.result[external_id] = patient.pk

    def apply(self) -> dict[str, uuid.UUID]:
        now = timezone.now()
        with transaction.atomic():
            emptied = [holder for holder, _, _ in self.moves if holder is not None]
            # The partial unique index is checked per statement: the lead lets go before the patient takes.
            for holder in emptied:
                setattr(holder, self.field, None)
                holder.deleted_at, holder.is_active, holder.updated_at = now, False, now
            if emptied:
                Contact.objects.bulk_update(emptied, [self.field, "deleted_at", "is_active", "updated_at"])
                ContactMatchCandidate.objects.filter(lead__in=emptied).delete()
            patients = []
            for _, patient, value in self.moves:
                setattr(patient, self.field, value)
                patient.updated_at = now
                patients.append(patient)
            if patients:
                Contact.objects.bulk_update(patients, [self.field, "updated_at"])
            for lead_contact, patient, _ in self.moves:
                if lead_contact is not None:
                    Conversation.objects.filter(organization=self.organization, contact=lead_contact).update(
                        contact=patient, updated_at=now)
            if self.lead_updates:
                leads = [lead for lead, _ in self.lead_updates]
                for lead in leads:
                    lead.updated_at = now
                Contact.objects.bulk_update(
                    leads, ["first_name", "last_name", "email", "phone_raw", "phone_e164", "updated_at"])
                ContactMatchCandidate.objects.filter(lead__in=leads).delete()
            created = self._create_leads()
            ContactMatchCandidate.objects.bulk_create(
                [ContactMatchCandidate(organization=self.organization, lead=lead, patient=patient, reason=reason)
                 for lead, listed in [*self.lead_updates, *created] for patient, reason in listed],
                ignore_conflicts=True)
        return self.result

    def _create_leads(self) -> list[tuple[Contact, list]]:
        """Insert the new leads; returns the ones this call created. A webhook and the sync (or two webhooks
        about one new contact) may create the same lead at once: the loser's insert waits for the winner and
        skips (ON CONFLICT DO NOTHING on the identity's unique index), then takes the winner's row — never
        an IntegrityError that would record a genuine delivery as failed."""
        if not self.new_leads:
            return []
        Contact.objects.bulk_create([lead for _, lead, _ in self.new_leads], ignore_conflicts=True)
        values = [getattr(lead, self.field) for _, lead, _ in self.new_leads]
        stored = dict(Contact.objects.filter(organization=self.organization, **{f"{self.field}__in": values})
                      .values_list(self.field, "pk"))
        created = []
        for external_id, lead, listed in self.new_leads:
            pk = stored[getattr(lead, self.field)]
            self.result[external_id] = pk
            if pk == lead.pk:
                created.append((lead, listed))
        return created


def identity_assign(*, organization: Organization, provider: str, external_id: str, holder: Contact | None,
                    patient: Contact) -> None:
    """Give ``patient`` the identity that ``holder`` (a lead, or nobody) holds: the lead's conversations
    follow and the emptied lead is retired. The caller has checked decisions and that the patient is free."""
    _bound(organization)
    plan = _Plan(organization=organization, field=_field(provider))
    plan._move(external_id, holder, patient, _stored(provider, external_id))
    plan.apply()


def _candidates(item: _Identity, patients: Sequence[Contact], refused) -> tuple[list[Contact], str]:
    """Patients with the same phone; if none, with the same email. A patient an admin said "not this" to is
    never a candidate again."""
    eligible = [patient for patient in patients if patient.pk != refused]
    if item.e164:
        by_phone = [patient for patient in eligible if patient.phone_e164 == item.e164]
        if by_phone:
            return by_phone, MatchReason.PHONE
    if item.email:
        by_email = [patient for patient in eligible if normalised_email(patient.email) == item.email]
        if by_email:
            return by_email, MatchReason.EMAIL
    return [], MatchReason.PHONE


def _new_lead(organization: Organization, item: _Identity) -> Contact:
    first, last = _split_name(item.source.name)
    return Contact(organization=organization, first_name=first, last_name=last, email=item.source.email[:320],
                   phone_raw=item.source.phone_raw[:64], phone_e164=item.e164, cliniko_patient_id=None)


def _refresh_lead(lead: Contact, item: _Identity) -> None:
    """A lead shows what the vendor knows now (a patient's details come from Cliniko only)."""
    first, last = _split_name(item.source.name)
    if first or last:
        lead.first_name, lead.last_name = first, last
    if item.source.email:
        lead.email = item.source.email[:320]
    if item.source.phone_raw:
        lead.phone_raw, lead.phone_e164 = item.source.phone_raw[:64], item.e164


def _contact(organization: Organization, contact) -> Contact:
    """The contact re-read inside this organization and locked: an id from another clinic is not found."""
    return Contact.objects.select_for_update().get(organization=organization, pk=getattr(contact, "pk", contact))


def contact_link(*, organization: Organization, lead, patient, actor) -> Contact:
    """A clinic admin's choice: the lead's messaging identities (and conversations) move to the patient,
    the lead is retired, and the decision sticks across syncs."""
    _bound(organization)
    with transaction.atomic():
        lead, patient = _contact(organization, lead), _contact(organization, patient)
        if lead.cliniko_patient_id is not None or lead.deleted_at is not None:
            raise ValueError("Only an active lead can be linked to a patient.")
        if patient.cliniko_patient_id is None or patient.deleted_at is not None:
            raise ValueError("A lead is linked to a patient from Cliniko.")
        moved = {}
        for provider, field in IDENTITY_FIELDS.items():
            value = getattr(lead, field)
            if value is None:
                continue
            if getattr(patient, field) is not None:
                raise LinkConflict(f"The patient already has a {provider} contact; unlink it first.")
            moved[provider] = (field, value)
        now = timezone.now()
        for field, _ in moved.values():
            setattr(lead, field, None)
        lead.deleted_at, lead.is_active = now, False
        lead.save(update_fields=[*(field for field, _ in moved.values()), "deleted_at", "is_active", "updated_at"])
        for field, value in moved.values():
            setattr(patient, field, value)
        patient.save(update_fields=[*(field for field, _ in moved.values()), "updated_at"])
        for provider, (_, value) in moved.items():
            ContactLinkDecision.objects.update_or_create(
                organization=organization, provider=provider, external_id=str(value),
                defaults={"patient": patient, "linked": True, "decided_by": _user(actor)})
        Conversation.objects.filter(organization=organization, contact=lead).update(contact=patient, updated_at=now)
        ContactMatchCandidate.objects.filter(organization=organization, lead=lead).delete()
        audit_record(action="contact.linked", organization=organization, actor=actor, object_type="contact",
                     object_id=patient.pk, changes={"lead": str(lead.pk), "providers": sorted(moved)})
    return patient


def contact_unlink(*, organization: Organization, patient, provider: str, actor) -> Contact:
    """A clinic admin's "this is not that patient": the identity and its conversations move to a new lead,
    and matching never links that identity to this patient again. Returns the lead."""
    _bound(organization)
    field = _field(provider)
    with transaction.atomic():
        patient = _contact(organization, patient)
        if patient.cliniko_patient_id is None:
            # A lead *is* the messaging contact: there is no patient to take it away from.
            raise ValueError("This is a lead, not a patient: there is nothing to unlink.")
        value = getattr(patient, field)
        if value is None:
            raise ValueError(f"The patient has no {provider} contact to unlink.")
        setattr(patient, field, None)
        patient.save(update_fields=[field, "updated_at"])
        lead = Contact(organization=organization, cliniko_patient_id=None)
        setattr(lead, field, value)
        lead.save()
        ContactLinkDecision.objects.update_or_create(
            organization=organization, provider=provider, external_id=str(value),
            defaults={"patient": patient, "linked": False, "decided_by": _user(actor)})
        Conversation.objects.filter(organization=organization, contact=patient, provider=provider).update(
            contact=lead, updated_at=timezone.now())
        # Until the vendor next tells us about the contact, the lead is named as its messages sign themselves
        # (never the patient's name: that is who it is not).
        sender = (Message.objects.filter(organization=organization, conversation__contact=lead,
                                         direction=MessageDirection.INBOUND)
                  .exclude(sender_name="").order_by("-sent_at").values_list("sender_name", flat=True).first())
        if sender:
            lead.first_name, lead.last_name = _split_name(sender)
            lead.save(update_fields=["first_name", "last_name", "updated_at"])
        audit_record(action="contact.unlinked", organization=organization, actor=actor, object_type="contact",
                     object_id=patient.pk, changes={"lead": str(lead.pk), "provider": provider})
    return lead


def _user(actor):
    return actor if actor is not None and getattr(actor, "is_authenticated", False) else None
