"""The dashboard's and the sync's queries use the index they are written for, as the app role under RLS.

A few tens of thousands of rows are seeded (enough for the planner to tell a scan from a probe) and analyzed,
then each query is planned (EXPLAIN, not run) with the planner's own choices: no sequential scan of a big
table, and the expected index. ``scripts/bench_dashboard.py`` checks the same plans at a million rows.
"""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.conf import settings
from django.db import connection

from messaging.services import CONVERSATION_COUNTERS_RECOUNT
from patients import dashboard
from patients.services import ACTIVE_PATIENTS_REFRESH, CONTACTS_TOMBSTONES, LINK_APPOINTMENTS, active_patients_refresh
from routiq.testing.plans import explain, indexes_used, plan_problems, sequential_scans, unbounded_index_scans
from tenants.rls.binding import bind_organization

pytestmark = pytest.mark.django_db
SEED_SQL = [
    """
    INSERT INTO contacts (id, organization_id, cliniko_patient_id, first_name, last_name, email, phone_raw,
        source_created_at, is_active, created_at, updated_at)
    SELECT md5('plan-contact-' || g)::uuid, %(org)s, 5000000 + g, 'Pat', 'Example' || (g %% 500), '', '',
           now() - random() * interval '3 years', true, now(), now()
    FROM generate_series(1, 20000) g
    """,
    """
    INSERT INTO appointments (organization_id, contact_id, cliniko_appointment_id, cliniko_patient_id, starts_at,
        cancelled_at, did_not_arrive, patient_arrived, notes, created_at, updated_at)
    SELECT %(org)s, md5('plan-contact-' || (1 + g %% 20000))::uuid, 6000000 + g, 5000000 + 1 + g %% 20000,
           now() - interval '700 days' + random() * interval '760 days', CASE WHEN g %% 12 = 0 THEN now() END,
           g %% 25 = 0, false, '', now(), now()
    FROM generate_series(1, 100000) g
    """,
    """
    INSERT INTO conversations (id, organization_id, contact_id, provider, external_id, channel, inbox_name, status,
        assignee_name, last_message_preview, message_count, unanswered_since, created_at, updated_at)
    SELECT md5('plan-conversation-' || g)::uuid, %(org)s, md5('plan-contact-' || g)::uuid, 'chatwoot', g::text, '',
           '', 'open', '', '', 0, CASE WHEN g %% 20 = 0 THEN now() - g * interval '1 minute' END, now(), now()
    FROM generate_series(1, 5000) g
    """,
    """
    INSERT INTO messages (organization_id, conversation_id, provider, external_id, direction, private, sender_name,
        content, content_type, attachments, sent_at, created_at, updated_at)
    SELECT %(org)s, md5('plan-conversation-' || (1 + g %% 5000))::uuid, 'chatwoot', 'p' || g,
           CASE WHEN g %% 2 = 0 THEN 'inbound' ELSE 'outbound' END, false, '', 'hello', 'text', '[]',
           now() - random() * interval '80 days', now(), now()
    FROM generate_series(1, 40000) g
    """,
]


@pytest.fixture
def seeded(org_a):
    with bind_organization(org_a):
        with connection.cursor() as cursor:
            for statement in SEED_SQL:
                cursor.execute(statement, {"org": org_a.pk})
        analyze(org_a, "contacts", "appointments", "conversations", "messages")
        active_patients_refresh(organization=org_a)
        analyze(org_a, "active_patients")
        dashboard.dashboard_refresh(organization=org_a)
    return org_a


def analyze(organization, *tables: str) -> None:
    """ANALYZE is the owner's (it samples this transaction's own rows too); the test goes on as the app role."""
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
        for table in tables:
            cursor.execute(f'ANALYZE "{organization.schema_name}".{table}')
        cursor.execute(f'SET ROLE "{settings.DATABASE_APP_ROLE}"')


def message_partitions(organization) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "WHERE i.inhparent = %s::regclass", [f'"{organization.schema_name}".messages'])
        return [name for (name,) in cursor.fetchall()]


DASHBOARD_QUERIES = ["summary", "months", "days", "lapsing patients", "waiting conversations"]


def test_the_dashboards_queries_use_their_index(seeded):
    with bind_organization(seeded):
        plans = {name: plan_problems(*query) for name, query in dashboard.page_queries(seeded).items()}

    assert plans == {name: [] for name in DASHBOARD_QUERIES}


def sync_queries(organization) -> dict[str, tuple[str, dict, set[str]]]:
    contact_ids = [uuid.uuid4(), uuid.uuid4()]
    return {
        "active patients of a page's contacts": (
            ACTIVE_PATIENTS_REFRESH.format(contact_filter="AND c.id = ANY(%(contact_ids)s::uuid[])",
                                           appointment_filter="AND a.contact_id = ANY(%(contact_ids)s::uuid[])"),
            {"organization_id": organization.pk, "window_days": 90, "contact_ids": contact_ids},
            {"contacts_pkey"},
        ),
        "link appointments to new contacts": (
            LINK_APPOINTMENTS, {"organization_id": organization.pk, "contact_ids": contact_ids},
            {"contacts_cliniko_id_unique"},  # from the (few) unlinked appointments to their patient
        ),
        "patient tombstones": (
            CONTACTS_TOMBSTONES,
            {"organization_id": organization.pk, "ids": [1, 2],
             "deleted": [datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)] * 2},
            {"contacts_cliniko_id_unique"},
        ),
        "conversation counters read back from messages": (
            CONVERSATION_COUNTERS_RECOUNT,
            {"organization_id": organization.pk, "conversation_ids": contact_ids, "totals": [1, 1],
             "last_ats": [datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)] * 2},
            {"conversations_pkey"},
        ),
    }


SYNC_QUERIES = ["active patients of a page's contacts", "link appointments to new contacts", "patient tombstones",
                "conversation counters read back from messages"]


def test_the_syncs_queries_use_their_indexes(seeded):
    plans, plans_used = {}, {}
    with bind_organization(seeded):
        for name, (sql, params, indexes) in sync_queries(seeded).items():
            nodes = explain(sql, params)
            plans[name] = (sequential_scans(nodes), unbounded_index_scans(nodes), sorted(indexes - indexes_used(nodes)))
            plans_used[name] = indexes_used(nodes)

    assert plans == {name: ([], [], []) for name in SYNC_QUERIES}, plans_used
    # The counters' probes read each partition of messages by its conversation index.
    assert {index for index in plans_used["conversation counters read back from messages"]
            if index.startswith("messages")} == {f"{partition}_conversation_id_sent_at_idx"
                                                 for partition in message_partitions(seeded)}


def test_the_check_sees_a_query_no_index_can_serve(seeded):
    """The same check fails for a condition RLS keeps away from the index (ILIKE is not leakproof), or for a
    condition no index covers."""
    with bind_organization(seeded):
        nodes = explain("SELECT id FROM contacts WHERE organization_id = %s AND last_name ILIKE %s "
                        "ORDER BY last_name, first_name, id LIMIT 5", [seeded.pk, "Example12%"])
        unindexed = explain("SELECT * FROM conversations WHERE organization_id = %s AND assignee_name = 'x' "
                            "ORDER BY assignee_name LIMIT 5", [seeded.pk])

    assert "contacts_org_name_idx" not in {n.get("Index Name") for n in nodes if "Index Cond" in n
                                           and "last_name" in n["Index Cond"]}
    assert sequential_scans(unindexed) == ["conversations"]
