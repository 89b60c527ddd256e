"""Run the periodic schedule (routiq/scheduler.py) until interrupted."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand

from routiq.scheduler import enqueue_due, schedule
from routiq.worker import enqueue_scheduled_jobs, requeue_abandoned_jobs


class Command(BaseCommand):
    help = ("Enqueue the periodic jobs (incremental syncs, partition upkeep) when due, and retry the jobs of killed "
            "workers; runs until Ctrl-C.")

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Enqueue what is due now, then exit.")

    def handle(self, *args, once, **options):
        names = ", ".join(entry.name for entry in schedule()) or "nothing"
        self.stdout.write(f"Scheduler: {names}; tick {settings.SCHEDULER_TICK_SECONDS}s")
        try:
            while True:
                enqueue_due()
                requeue_abandoned_jobs()
                enqueue_scheduled_jobs()
                if once:
                    return
                time.sleep(settings.SCHEDULER_TICK_SECONDS)
        except KeyboardInterrupt:
            return
