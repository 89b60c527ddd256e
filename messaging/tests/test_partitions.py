"""messages partitioned by month (messaging/migrations/0007), its partition function and the scheduled job,
exercised as the app role."""

from __future__ import annotations

import datetime

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from messaging import partitions
from messaging.models import Conversation, Message
from tenants.models import Organization
from tenants.rls.binding import bind_organization
from tenants.rls.partitions import first_of_month, partition_name

pytestmark = pytest.mark.django_db
UTC = datetime.UTC


def children(organization) -> dict[str, str]:
    """partition name -> its bound expression."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [f'"{organization.schema_name}".messages'],
        )
        return dict(cursor.fetchall())


def holding(message: Message) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM messages WHERE id = %s", [message.pk])
        return cursor.fetchone()[0].split(".")[-1]


def new_message(organization, sent_at: datetime.datetime, external_id: str = "m1") -> Message:
    thread = Conversation.objects.create(organization=organization, provider="chatwoot",
                                         external_id=f"c-{external_id}")
    return Message.objects.create(organization=organization, conversation=thread, provider="chatwoot",
                                  external_id=external_id, direction="inbound", content="Hi", sent_at=sent_at)


def test_messages_is_partitioned_by_month_with_the_vendor_key_including_sent_at(org_a):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_partkeydef(%s::regclass)", [f'"{org_a.schema_name}".messages'])
        assert cursor.fetchone()[0] == "RANGE (sent_at)"
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
            "AND contype IN ('p', 'u') ORDER BY conname",
            [f'"{org_a.schema_name}".messages'],
        )
        assert cursor.fetchall() == [
            ("messages_external_sent_unique", "UNIQUE (provider, external_id, sent_at)"),
            ("messages_pkey", "PRIMARY KEY (id, sent_at)"),
        ]
    this_month = timezone.now().date().replace(day=1)
    expected = {partition_name(first_of_month(this_month, n), "messages") for n in range(4)}
    assert expected | {"messages_default"} <= set(children(org_a))


def test_a_message_lands_in_its_months_partition_and_the_upsert_key_holds(org_a):
    sent_at = timezone.now()
    with bind_organization(org_a):
        message = new_message(org_a, sent_at)
        assert holding(message) == partition_name(sent_at.date().replace(day=1), "messages")
        with pytest.raises(IntegrityError), transaction.atomic():
            Message.objects.create(organization=org_a, conversation=message.conversation, provider="chatwoot",
                                   external_id="m1", direction="inbound", content="again", sent_at=sent_at)
        with connection.cursor() as cursor:  # the shape of the sync's upsert
            cursor.execute(
                "INSERT INTO messages (created_at, updated_at, provider, external_id, direction, content, "
                "content_type, sent_at, conversation_id, organization_id, attachments, private, sender_name) "
                "VALUES (now(), now(), 'chatwoot', 'm1', 'inbound', 'edited', 'text', %s, %s, %s, '[]', false, '') "
                "ON CONFLICT (provider, external_id, sent_at) DO UPDATE SET content = EXCLUDED.content",
                [sent_at, message.conversation_id, org_a.pk],
            )
        assert list(Message.objects.values_list("content", flat=True)) == ["edited"]


def test_function_as_the_app_role_creates_forced_rls_partitions_idempotently(org_a):
    wanted = [partition_name(datetime.date(2030, month, 1), "messages") for month in (1, 2, 3)]
    with bind_organization(org_a):
        first = partitions.ensure_message_partitions(organization=org_a, months_ahead=2,
                                                     today=datetime.date(2030, 1, 1))
        again = partitions.ensure_message_partitions(organization=org_a, months_ahead=2,
                                                     today=datetime.date(2030, 1, 20))
    assert wanted <= first and wanted <= again
    bounds = children(org_a)
    assert bounds[wanted[0]] == "FOR VALUES FROM ('2030-01-01 00:00:00+00') TO ('2030-02-01 00:00:00+00')"
    with connection.cursor() as cursor:
        for name in wanted:
            cursor.execute(
                "SELECT relrowsecurity, relforcerowsecurity, "
                "(SELECT array_agg(polname) FROM pg_policy WHERE polrelid = c.oid) "
                "FROM pg_class c WHERE oid = %s::regclass",
                [f'"{org_a.schema_name}".{name}'],
            )
            assert cursor.fetchone() == (True, True, ["organization_isolation"])


def test_history_in_the_default_partition_moves_into_its_new_month(org_a, org_b):
    old = datetime.datetime(2019, 5, 17, 9, 30, tzinfo=UTC)  # no partition: a sync of old history
    with bind_organization(org_a):
        message = new_message(org_a, old)
        assert holding(message) == "messages_default"
        names = partitions.ensure_message_partitions(organization=org_a)
        assert "messages_y2019m05" in names
        assert holding(message) == "messages_y2019m05"
        assert Message.objects.get(pk=message.pk).content == "Hi"
    assert "messages_y2019m05" not in children(org_b)


def test_with_nothing_bound_rows_in_the_default_partition_are_not_moved(org_a):
    old = datetime.datetime(2018, 3, 2, tzinfo=UTC)
    with bind_organization(org_a):
        message = new_message(org_a, old)
    with pytest.raises(DatabaseError, match="default partition"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT "{org_a.schema_name}".create_messages_partition(%s)', [datetime.date(2018, 3, 1)])
    with bind_organization(org_a):
        assert holding(message) == "messages_default"
        partitions.ensure_message_partitions(organization=org_a)  # bound: the job's way, which moves them
        assert holding(message) == "messages_y2018m03"


def test_the_function_refuses_bad_months(org_a):
    for month in (datetime.date(2030, 1, 2), datetime.date(1999, 12, 1), datetime.date(2300, 1, 1)):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f'SELECT "{org_a.schema_name}".create_messages_partition(%s)', [month])


def test_ensure_refuses_another_organizations_binding(org_a, org_b):
    with bind_organization(org_b), pytest.raises(partitions.MessagePartitionError):
        partitions.ensure_message_partitions(organization=org_a)


def test_schedule_fans_out_one_job_per_active_organization_and_the_job_creates_partitions(
        org_a, org_b, empty_queue, settings, django_capture_on_commit_callbacks):
    queue = empty_queue(partitions.QUEUE)
    assert {"name": "message-partitions", "func": "messaging.partitions.create_message_partitions",
            "every_seconds": 24 * 3600} in settings.ROUTIQ_SCHEDULE
    with connection.cursor() as cursor:  # the furthest month goes, so the job must really make it again
        furthest = partition_name(first_of_month(timezone.now().date(), 3), "messages")
        cursor.execute("RESET ROLE")
        cursor.execute(f'DROP TABLE "{org_a.schema_name}".{furthest}')
        cursor.execute(f'SET ROLE "{settings.DATABASE_APP_ROLE}"')
    assert furthest not in children(org_a)

    active = set(Organization.objects.filter(is_active=True).values_list("pk", flat=True))
    assert {org_a.pk, org_b.pk} <= active
    with django_capture_on_commit_callbacks(execute=True):  # django-rq enqueues when the transaction commits
        assert partitions.create_message_partitions() == len(active)
    jobs = {job_id: queue.fetch_job(job_id) for job_id in queue.job_ids}
    assert set(jobs) == {partitions.job_id_for(pk) for pk in active}
    with django_capture_on_commit_callbacks(execute=True):
        partitions.create_message_partitions()  # queued ones are not queued twice
    assert len(queue.job_ids) == len(active)

    job = jobs[partitions.job_id_for(org_a.pk)]
    assert job.func is partitions.create_message_partitions_for
    result = job.func(*job.args)
    assert furthest in result
    assert furthest in children(org_a)
