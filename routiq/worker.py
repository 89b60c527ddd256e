"""The RQ worker class (settings.RQ["WORKER_CLASS"]): a killed worker's job is noticed in seconds, not minutes.

While a job runs, the worker process (not the work-horse that runs the job) renews the job's entry in the
queue's StartedJobRegistry every ``RQ_HEARTBEAT_SECONDS``; an entry not renewed within its time to live marks
the job abandoned — its worker was SIGKILLed, its machine lost. RQ's own numbers (a renewal every 30 s, a
margin of 60 s) leave a killed sync undetected for 90 s; ours default to 10 s and 20 s, so it is abandoned
30 s after the last renewal. The work-horse being busy (a slow page, a long statement) does not delay the
renewal: the worker process renews while it waits for the work-horse.

Two chores run on every tick of ``manage.py run_scheduler`` rather than only inside workers:

* ``requeue_abandoned_jobs``: RQ's registry cleanup, which retries an abandoned job that has retries left
  (after its first retry interval) and fails the rest. An idle worker runs it only every 10 minutes, a busy
  one never.
* ``enqueue_scheduled_jobs``: moving due scheduled jobs (retries, ``enqueue_once(at=…)``) onto their queues.
  RQ does it in one worker's scheduler process, under a lock in Redis; a worker that is killed holds that lock
  until it expires, and the other workers try to take it over only every 10 minutes, so retries would wait.
  The scheduler takes the same lock (RQ's own ``RQScheduler``, so only one process does it at a time) and
  does the work itself.

With the defaults a killed worker's sync is retried within about 100 s: abandoned 30 s after its last renewal,
found by the next tick (10 s), retried after the first retry interval (60 s), enqueued by the next tick.
"""

from __future__ import annotations

import logging

import django_rq
from django.conf import settings
from rq import Worker as RQWorker
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.scheduler import RQScheduler

logger = logging.getLogger(__name__)


class Worker(RQWorker):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("job_monitoring_interval", settings.RQ_HEARTBEAT_SECONDS)
        super().__init__(*args, **kwargs)

    def get_heartbeat_ttl(self, job: Job) -> int:
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - self.current_job_working_time, interval)
        return int(interval) + settings.RQ_HEARTBEAT_GRACE_SECONDS


def requeue_abandoned_jobs() -> list[str]:
    """Move every queue's abandoned jobs on (retried if they have retries left); returns their ids."""
    abandoned = []
    for name in settings.RQ_QUEUES:
        registry = StartedJobRegistry(queue=django_rq.get_queue(name))
        expired = registry.get_expired_job_ids()
        if expired:
            registry.cleanup()
            logger.warning("abandoned jobs moved on queue=%s job_ids=%s", name, ",".join(expired))
            abandoned.extend(expired)
    return abandoned


_scheduler: RQScheduler | None = None


def enqueue_scheduled_jobs() -> list[str]:
    """Move every queue's due scheduled jobs onto the queue, if this process holds (or takes over) RQ's scheduler
    lock for it; returns the queues it holds."""
    global _scheduler
    if _scheduler is None:
        _scheduler = RQScheduler(list(settings.RQ_QUEUES), connection=django_rq.get_connection(),
                                 interval=settings.SCHEDULER_TICK_SECONDS)
    held = _scheduler.acquire_locks()
    if held:
        _scheduler.enqueue_scheduled_jobs()
    return sorted(held)
