"""The periodic schedule enqueues each entry once per period, whatever the number of ticks or schedulers."""

from __future__ import annotations

import django_rq
import pytest

from routiq.scheduler import ScheduledJob, enqueue_due

ENTRY = ScheduledJob(name="test-entry", func="routiq.tests.test_scheduler.noop", every_seconds=900)


def noop():
    return "ok"


@pytest.fixture
def queue():
    queue = django_rq.get_queue("default")

    def forget():
        for job_id in ("schedule-test-entry-10", "schedule-test-entry-11"):
            job = queue.fetch_job(job_id)
            if job is not None:
                job.delete()

    forget()
    yield queue
    forget()


def test_an_entry_is_enqueued_once_per_period(queue):
    first = enqueue_due(now=9_000.0, entries=[ENTRY])
    again = enqueue_due(now=9_500.0, entries=[ENTRY])  # same 900 s period, another tick or scheduler
    next_period = enqueue_due(now=9_900.0, entries=[ENTRY])

    assert first == ["schedule-test-entry-10"]
    assert again == []
    assert next_period == ["schedule-test-entry-11"]
    for job_id in first + next_period:  # really on the queue, calling the entry's function
        job = queue.fetch_job(job_id)
        assert (job.func_name, job.get_status(), job_id in queue.job_ids) == (ENTRY.func, "queued", True)


def test_the_configured_schedule_names_importable_jobs(settings):
    from django.utils.module_loading import import_string

    from routiq.scheduler import schedule

    assert {entry.name for entry in schedule()} >= {"cliniko-incremental", "audit-partitions"}
    for entry in schedule():
        assert callable(import_string(entry.func))
