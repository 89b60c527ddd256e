"""Demo organizations and staff for `make run`, with patients that arrive through a real Cliniko sync.

`scripts/dev.py run` starts one Cliniko stand-in server per demo clinic (routiq/testing/cliniko_stub.py,
seeded with realistic patients and appointments) and passes their URLs here; each demo clinic gets a
Cliniko credential pointing at its server and a sync is queued, so the portal shows data that went
through the same client, pacing, upserts and checkpoints as production. Idempotent.
"""

from __future__ import annotations

from typing import Any

from billing.models import Plan
from messaging.jobs import enqueue_chatwoot_sync
from patients.jobs import enqueue_organization_sync
from tenants.credentials import credential_set
from tenants.models import Organization, OrganizationMember, User
from tenants.rls.binding import bind_organization
from tenants.services import organization_create

DEMO_ORGANIZATIONS: list[dict[str, Any]] = [
    {"name": "Harbour Physio", "clerk_org_id": "org_demo_harbour", "slug": "harbour-physio"},
    {"name": "Summit Chiro", "clerk_org_id": "org_demo_summit", "slug": "summit-chiro"},
]
DEMO_CLINIKO_KEY = "demo-key"
DEMO_CHATWOOT_TOKEN = "demo-chatwoot-token"
DEMO_CHATWOOT_ACCOUNT_ID = "1"
# The prices scripts/dev.py gives the demo's Stripe stand-in.
DEMO_PLANS = [
    {"stripe_price_id": "price_demo_basic", "name": "Basic", "amount": 4900, "sort_order": 0,
     "features": ["Patients and appointments from Cliniko", "Inbox and timeline"]},
    {"stripe_price_id": "price_demo_pro", "name": "Pro", "amount": 9900, "sort_order": 1,
     "features": ["Everything in Basic", "ManyChat", "Priority support"]},
]


def load_demo(*, cliniko_urls: dict[str, str], chatwoot_urls: dict[str, str] | None = None) -> list[Organization]:
    """``cliniko_urls`` / ``chatwoot_urls`` map a demo clerk_org_id to the base URL of its stand-in server."""
    chatwoot_urls = chatwoot_urls or {}
    for plan in DEMO_PLANS:
        Plan.objects.get_or_create(stripe_price_id=plan["stripe_price_id"], defaults=plan)
    organizations = []
    for spec in DEMO_ORGANIZATIONS:
        organization = Organization.objects.filter(clerk_org_id=spec["clerk_org_id"]).first()
        if organization is None:
            organization = organization_create(**spec, actor_label="demo")
        organizations.append(organization)
        demo_staff(organization)
        if spec["clerk_org_id"] in cliniko_urls:
            with bind_organization(organization):
                credential_set(organization=organization, provider="cliniko", secret=DEMO_CLINIKO_KEY,
                               base_url=cliniko_urls[spec["clerk_org_id"]], actor_label="demo")
        cliniko_jobs = enqueue_organization_sync(organization) if spec["clerk_org_id"] in cliniko_urls else []
        if spec["clerk_org_id"] in chatwoot_urls:
            with bind_organization(organization):
                credential_set(organization=organization, provider="chatwoot", secret=DEMO_CHATWOOT_TOKEN,
                               base_url=chatwoot_urls[spec["clerk_org_id"]], account_id=DEMO_CHATWOOT_ACCOUNT_ID,
                               actor_label="demo")
            enqueue_chatwoot_sync(organization, after=cliniko_jobs[0] if cliniko_jobs else None)
    return organizations


def demo_staff(organization: Organization) -> None:
    slug = organization.slug.split("-")[0]
    with bind_organization(organization):
        for role in ("admin", "member"):
            user, _ = User.objects.get_or_create(
                clerk_user_id=f"user_demo_{slug}_{role}",
                defaults={"username": f"demo-{slug}-{role}", "first_name": slug.title(), "last_name": role.title(),
                          "email": f"{role}@{slug}.example"},
            )
            OrganizationMember.objects.get_or_create(organization=organization, user=user, defaults={"role": role})
