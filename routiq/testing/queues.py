"""What an RQ queue holds for tests: every job id waiting in it, whichever way it waits."""

from __future__ import annotations


def waiting_job_ids(queue) -> set[str]:
    """Queued, deferred (behind a dependency) and scheduled (for a later time) job ids."""
    return (set(queue.job_ids) | set(queue.deferred_job_registry.get_job_ids())
            | set(queue.scheduled_job_registry.get_job_ids()))
