"""The periodic schedule: which jobs run how often. `manage.py run_scheduler` enqueues them.

Each entry enqueues with a deterministic job id derived from the entry and the period it belongs to, so
two schedulers (or a restarted one) cannot pile up duplicates: RQ refuses nothing, so we check first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import django_rq
from django.conf import settings
from django.utils.module_loading import import_string
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    func: str  # dotted path, imported when due
    every_seconds: int
    queue: str = "default"


def schedule() -> list[ScheduledJob]:
    return [ScheduledJob(**entry) for entry in settings.ROUTIQ_SCHEDULE]


def job_id_for(entry: ScheduledJob, now: float) -> str:
    return f"schedule-{entry.name}-{int(now // entry.every_seconds)}"


def enqueue_due(now: float | None = None, entries: list[ScheduledJob] | None = None) -> list[str]:
    """Enqueue each entry once per period; returns the ids enqueued by this call."""
    now = time.time() if now is None else now
    enqueued = []
    for entry in entries if entries is not None else schedule():
        queue = django_rq.get_queue(entry.queue)
        job_id = job_id_for(entry, now)
        if job_already_exists(job_id, queue.connection):
            continue
        func: Callable = import_string(entry.func)
        queue.enqueue(func, job_id=job_id, result_ttl=entry.every_seconds * 2)
        enqueued.append(job_id)
        logger.info("scheduled job enqueued name=%s job_id=%s", entry.name, job_id)
    return enqueued


def job_already_exists(job_id: str, connection) -> bool:
    try:
        return Job.fetch(job_id, connection=connection).get_status() != JobStatus.CANCELED
    except NoSuchJobError:
        return False
