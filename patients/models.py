"""Per-clinic patient data (tenant schema): contacts, appointments and the active-patient summary."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from tenants.models import OrganizationOwned


class Contact(OrganizationOwned):
    """A patient, mirrored from Cliniko and matched to Chatwoot/ManyChat contacts."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    first_name = models.CharField(max_length=200, blank=True, default="")
    last_name = models.CharField(max_length=200, blank=True, default="")
    email = models.CharField(max_length=320, blank=True, default="")
    phone_raw = models.CharField(max_length=64, blank=True, default="")
    phone_e164 = models.CharField(max_length=20, null=True, blank=True)
    date_of_birth = models.DateField(null=True, blank=True)
    cliniko_patient_id = models.BigIntegerField(null=True, blank=True)
    chatwoot_contact_id = models.BigIntegerField(null=True, blank=True)
    manychat_subscriber_id = models.CharField(max_length=64, null=True, blank=True)
    source_created_at = models.DateTimeField(null=True, blank=True)
    source_updated_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True, help_text="Archived in Cliniko.")
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Soft delete: deleted at the source.")
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+"
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+"
    )

    class Meta:
        db_table = "contacts"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "cliniko_patient_id"],
                condition=Q(cliniko_patient_id__isnull=False),
                name="contacts_cliniko_id_unique",
            ),
            models.UniqueConstraint(
                fields=["organization", "chatwoot_contact_id"],
                condition=Q(chatwoot_contact_id__isnull=False),
                name="contacts_chatwoot_id_unique",
            ),
            models.UniqueConstraint(
                fields=["organization", "manychat_subscriber_id"],
                condition=Q(manychat_subscriber_id__isnull=False),
                name="contacts_manychat_id_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "created_at"], name="contacts_org_created_idx"),
            # Keyset pagination of the patient list walks this index.
            models.Index(fields=["organization", "last_name", "first_name", "id"], name="contacts_org_name_idx"),
            models.Index(
                fields=["organization", "phone_e164"],
                condition=Q(phone_e164__isnull=False),
                name="contacts_org_phone_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class MatchReason(models.TextChoices):
    PHONE = "phone", "Same phone number"
    EMAIL = "email", "Same email address"


class ContactMatchCandidate(OrganizationOwned):
    """A messaging contact (a lead) that could be one of several patients: never guessed, a clinic admin
    picks one. Rows go when the lead is linked (or dismissed)."""

    id = models.BigAutoField(primary_key=True)
    lead = models.ForeignKey("Contact", on_delete=models.CASCADE, related_name="match_candidates")
    patient = models.ForeignKey("Contact", on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=10, choices=MatchReason.choices)

    class Meta:
        db_table = "contact_match_candidates"
        constraints = [
            models.UniqueConstraint(fields=["lead", "patient"], name="contact_match_candidates_unique"),
        ]


class ContactLinkDecision(OrganizationOwned):
    """A clinic admin's link or unlink of a messaging identity (provider + external contact id) to a
    patient. Syncs and matching obey it, so a manual decision sticks."""

    id = models.BigAutoField(primary_key=True)
    provider = models.CharField(max_length=20)
    external_id = models.CharField(max_length=64)
    patient = models.ForeignKey("Contact", null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+")
    linked = models.BooleanField()  # False: "not this patient" (unlinked), with patient naming who it is not
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+"
    )

    class Meta:
        db_table = "contact_link_decisions"
        constraints = [
            models.UniqueConstraint(fields=["provider", "external_id"], name="contact_link_decisions_unique"),
        ]


class Appointment(OrganizationOwned):
    """An individual appointment from Cliniko; cancelled and did-not-arrive ones are kept."""

    id = models.BigAutoField(primary_key=True)
    contact = models.ForeignKey(
        Contact, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="appointments"
    )
    cliniko_appointment_id = models.BigIntegerField()
    cliniko_patient_id = models.BigIntegerField(null=True, blank=True)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancellation_reason = models.SmallIntegerField(null=True, blank=True)
    did_not_arrive = models.BooleanField(default=False)
    patient_arrived = models.BooleanField(default=False)
    notes = models.TextField(blank=True, default="")
    source_created_at = models.DateTimeField(null=True, blank=True)
    source_updated_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "appointments"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "cliniko_appointment_id"], name="appointments_cliniko_id_unique"
            )
        ]
        indexes = [
            models.Index(fields=["organization", "starts_at"], name="appointments_org_starts_idx"),
            models.Index(fields=["contact", "starts_at"], name="appointments_contact_idx"),
            models.Index(fields=["organization", "cliniko_patient_id"], name="appointments_patient_idx"),
        ]


class ActivePatient(OrganizationOwned):
    """Per contact appointment summary, recomputed after each appointment sync."""

    contact = models.OneToOneField(
        Contact, primary_key=True, on_delete=models.DO_NOTHING, related_name="activity"
    )
    last_appointment_at = models.DateTimeField(null=True, blank=True)
    next_appointment_at = models.DateTimeField(null=True, blank=True)
    appointment_count = models.PositiveIntegerField(default=0)
    appointments_last_30_days = models.PositiveIntegerField(default=0)
    appointments_last_90_days = models.PositiveIntegerField(default=0)
    no_show_count = models.PositiveIntegerField(default=0)
    cancellation_count = models.PositiveIntegerField(default=0)
    is_active = models.BooleanField(default=False)

    class Meta:
        db_table = "active_patients"
        indexes = [
            models.Index(
                fields=["organization", "is_active", "last_appointment_at"], name="active_patients_active_idx"
            )
        ]
