"""Chatwoot sync jobs: the scheduler's fan-out, the chain of resources, and a job run end to end."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from messaging.jobs import enqueue_full_syncs, enqueue_incremental_syncs, sync_chatwoot
from messaging.tests.chatwoot_helpers import connect, conversations
from routiq.testing.clerk_fixtures import bearer
from routiq.testing.queues import waiting_job_ids
from tenants.credentials import credential_set
from tenants.models import SyncLog, SyncStatus
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db


@pytest.fixture
def sync_queue(empty_queue):
    return empty_queue("sync")


def test_fan_out_queues_the_three_resources_once(
        org_a, org_b, chatwoot, sync_queue, private_networks, django_capture_on_commit_callbacks):
    connect(org_a, chatwoot)

    with django_capture_on_commit_callbacks(execute=True):
        count = enqueue_incremental_syncs()
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_incremental_syncs()  # a second tick while the first jobs wait: nothing new

    assert count == 1
    ids = [f"chatwoot-{org_a.pk}-{resource}" for resource in ("contacts", "conversations", "messages")]
    assert waiting_job_ids(sync_queue) == set(ids)
    # (The chain itself cannot be seen here: inside the test's transaction django-rq defers every enqueue to
    # commit and hands back no job to depend on.)
    assert sync_queue.fetch_job(ids[2]).args == (str(org_a.pk), "messages", False)


def test_the_weekly_run_is_full_except_for_messages(org_a, chatwoot, sync_queue, private_networks,
                                                    django_capture_on_commit_callbacks):
    connect(org_a, chatwoot)

    with django_capture_on_commit_callbacks(execute=True):
        enqueue_full_syncs()

    assert sync_queue.fetch_job(f"chatwoot-{org_a.pk}-contacts").args == (str(org_a.pk), "contacts", True)
    assert sync_queue.fetch_job(f"chatwoot-{org_a.pk}-conversations").args[2] is True
    assert sync_queue.fetch_job(f"chatwoot-{org_a.pk}-messages").args[2] is False  # a request per conversation


def test_a_job_syncs_its_organization(org_a, org_b, chatwoot, private_networks):
    chatwoot.seed(conversations=6, seed=8)
    connect(org_a, chatwoot)

    results = [sync_chatwoot(str(org_a.pk), resource) for resource in ("contacts", "conversations", "messages")]

    assert all(result.startswith("succeeded: sync log") for result in results)
    assert len(conversations(org_a)) == 6
    assert conversations(org_b) == {}


def test_a_job_without_credential_is_skipped_and_a_bad_token_is_not_retried(org_a, chatwoot, private_networks):
    assert sync_chatwoot(str(org_a.pk), "messages") == "skipped: no complete Chatwoot credential"

    with bind_organization(org_a):
        credential_set(organization=org_a, provider="chatwoot", secret="revoked-token", base_url=chatwoot.base_url,
                       account_id="7")
    result = sync_chatwoot(str(org_a.pk), "messages")

    assert result.startswith("failed: chatwoot: credentials rejected (HTTP 401)")
    with bind_organization(org_a):
        log = SyncLog.objects.get(provider="chatwoot", resource="messages")
    assert log.status == SyncStatus.FAILED and "401" in log.error


def test_sync_chatwoot_command_runs_in_the_foreground(org_a, chatwoot, private_networks, capsys):
    chatwoot.seed(conversations=4, messages_per_conversation=(2, 2), seed=1)
    connect(org_a, chatwoot)

    call_command("sync_chatwoot", org_a.clerk_org_id, "--now")

    out = capsys.readouterr().out
    assert "conversations: fetched 4, created 4" in out and "messages: fetched 8, created 8" in out
    assert len(conversations(org_a)) == 4


def test_sync_chatwoot_command_refuses_an_organization_without_chatwoot(org_a):
    with pytest.raises(CommandError, match="no complete Chatwoot credential"):
        call_command("sync_chatwoot", org_a.clerk_org_id, "--now")


def test_integrations_page_queues_and_shows_the_chatwoot_sync(client, mint, org_a, chatwoot, private_networks,
                                                              empty_queue, django_capture_on_commit_callbacks):
    chatwoot.seed(conversations=2, seed=5)
    connect(org_a, chatwoot)
    queue = empty_queue("sync")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/settings/integrations/chatwoot/sync", **bearer(mint(org_a)))
    for resource in ("contacts", "conversations", "messages"):
        sync_chatwoot(str(org_a.pk), resource)
    page = client.get("/settings/integrations/", **bearer(mint(org_a))).content.decode()

    assert response.status_code == 302
    assert set(queue.job_ids) | set(queue.deferred_job_registry.get_job_ids()) == {
        f"chatwoot-{org_a.pk}-{resource}" for resource in ("contacts", "conversations", "messages")}
    chatwoot_card = page[page.index('action="/settings/integrations/chatwoot/sync"'):]
    for resource in ("contacts", "conversations", "messages"):
        assert f"<tr><td>{resource}</td><td>Succeeded</td>" in chatwoot_card
