"""Demo organizations, staff and patients for `make run`. Idempotent: run it as often as you like."""

from __future__ import annotations

import random
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from patients.models import Appointment, Contact
from tenants.binding import bind_organization
from tenants.models import Organization, OrganizationMember, User
from tenants.services import organization_create

DEMO_ORGANIZATIONS = [
    {"name": "Harbour Physio", "clerk_org_id": "org_demo_harbour", "slug": "harbour-physio"},
    {"name": "Summit Chiro", "clerk_org_id": "org_demo_summit", "slug": "summit-chiro"},
]
FIRST_NAMES = ["Olivia", "Jack", "Charlotte", "William", "Amelia", "Noah", "Isla", "Oliver", "Mia", "Leo",
               "Grace", "Henry", "Chloe", "Lucas", "Zoe", "Thomas", "Ruby", "James", "Sophie", "Ethan"]
LAST_NAMES = ["Smith", "Jones", "Williams", "Brown", "Wilson", "Taylor", "Nguyen", "Johnson", "Martin", "White",
              "Anderson", "Walker", "Thompson", "Harris", "Lee", "Ryan", "Kelly", "King", "Tran", "Wright"]


def load_demo(*, patients_per_organization: int = 120) -> list[Organization]:
    organizations = []
    for index, spec in enumerate(DEMO_ORGANIZATIONS):
        organization = Organization.objects.filter(clerk_org_id=spec["clerk_org_id"]).first()
        if organization is None:
            organization = organization_create(**spec, actor_label="demo")
        organizations.append(organization)
        demo_staff(organization, index)
        demo_patients(organization, patients_per_organization, seed=index)
    return organizations


def demo_staff(organization: Organization, index: int) -> None:
    slug = organization.slug.split("-")[0]
    with bind_organization(organization):
        for role in ("admin", "member"):
            user, _ = User.objects.get_or_create(
                clerk_user_id=f"user_demo_{slug}_{role}",
                defaults={"username": f"demo-{slug}-{role}", "first_name": slug.title(), "last_name": role.title(),
                          "email": f"{role}@{slug}.example"},
            )
            OrganizationMember.objects.get_or_create(organization=organization, user=user, defaults={"role": role})


def demo_patients(organization: Organization, count: int, *, seed: int) -> None:
    rng = random.Random(seed)
    now = timezone.now()
    with bind_organization(organization), transaction.atomic():
        if Contact.objects.exists():
            return
        contacts = Contact.objects.bulk_create(
            Contact(
                organization=organization,
                first_name=rng.choice(FIRST_NAMES),
                last_name=rng.choice(LAST_NAMES),
                email=f"patient{n}.{organization.slug}@example.com",
                phone_raw=f"04{rng.randint(10_000_000, 99_999_999)}",
                phone_e164=None,
                cliniko_patient_id=1390726237298631000 + seed * 100_000 + n,
            )
            for n in range(count)
        )
        Appointment.objects.bulk_create(
            Appointment(
                organization=organization,
                contact=contact,
                cliniko_patient_id=contact.cliniko_patient_id,
                cliniko_appointment_id=contact.cliniko_patient_id + 50_000_000 + k * 1_000_000,
                starts_at=now + timedelta(days=rng.randint(-200, 30), hours=rng.randint(8, 17)),
                did_not_arrive=rng.random() < 0.05,
            )
            for contact in contacts
            for k in range(rng.randint(0, 4))
        )
