"""`make run`'s demo: each demo clinic gets a Chatwoot stand-in, a credential for it, and a queued sync that
brings its conversations in (matched to the clinic's patients)."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from messaging.jobs import sync_chatwoot
from messaging.tests.chatwoot_helpers import conversations
from routiq import demo
from routiq.demo import DEMO_CHATWOOT_ACCOUNT_ID, DEMO_CHATWOOT_TOKEN
from routiq.testing.chatwoot_stub import ChatwootStub
from tenants.credentials import credential_get
from tenants.models import Organization
from tenants.rls.binding import bind_organization

pytestmark = [pytest.mark.django_db, pytest.mark.owner_role]


def test_load_demo_connects_a_chatwoot_stand_in_and_queues_its_sync(
        private_networks, empty_queue, django_capture_on_commit_callbacks, monkeypatch):
    # The session's organizations already use the demo clinics' names and slugs.
    monkeypatch.setattr(demo, "DEMO_ORGANIZATIONS", [
        {"name": "Harbour Demo", "clerk_org_id": "org_demo_harbour", "slug": "harbourdemo-physio"},
        {"name": "Summit Demo", "clerk_org_id": "org_demo_summit", "slug": "summitdemo-chiro"}])
    queue = empty_queue("sync")
    with ChatwootStub(api_token=DEMO_CHATWOOT_TOKEN, account_id=int(DEMO_CHATWOOT_ACCOUNT_ID)) as stub:
        stub.seed(conversations=5, seed=3)
        with django_capture_on_commit_callbacks(execute=True):
            call_command("load_demo", f"--chatwoot=org_demo_harbour={stub.base_url}")

        harbour = Organization.objects.get(clerk_org_id="org_demo_harbour")
        with bind_organization(harbour):
            credential = credential_get(organization=harbour, provider="chatwoot")
        assert (credential.base_url, credential.account_id) == (stub.base_url, DEMO_CHATWOOT_ACCOUNT_ID)
        queued = set(queue.job_ids) | set(queue.deferred_job_registry.get_job_ids())
        assert queued == {f"chatwoot-{harbour.pk}-{r}" for r in ("contacts", "conversations", "messages")}
        summit = Organization.objects.get(clerk_org_id="org_demo_summit")
        with bind_organization(summit):
            assert credential_get(organization=summit, provider="chatwoot") is None

        for resource in ("contacts", "conversations", "messages"):
            assert sync_chatwoot(str(harbour.pk), resource).startswith("succeeded")
        assert len(conversations(harbour)) == 5
