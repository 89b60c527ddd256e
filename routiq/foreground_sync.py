"""One sync run in the foreground of a management command (``--now``), with a progress bar on stderr.

Shared by ``manage.py sync`` (Cliniko) and ``manage.py sync_chatwoot``: the run itself is the caller's; this
draws the bar and turns the failures an operator can act on into a CommandError (a one-line message and
exit status 1, not a traceback).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from routiq.http import VendorError
from routiq.sync import PageProgress, SyncAlreadyRunning


def run_with_progress(command: BaseCommand, *, resource: str,
                      run: Callable[[Callable[[PageProgress], None]], Any]) -> Any:
    """``run(on_page)`` with a bar counting the records of ``resource``; returns what ``run`` returns."""
    with tqdm(desc=resource, unit="rec", file=command.stderr) as bar:
        def on_page(progress: PageProgress) -> None:
            if progress.stream != resource:  # a resource read from several listings names the one it is on
                bar.set_postfix_str(progress.stream)
            bar.update(progress.records)

        try:
            return run(on_page)
        except SyncAlreadyRunning as exc:
            raise CommandError(str(exc)) from exc
        except VendorError as exc:
            raise CommandError(f"{resource} sync failed: {exc}") from exc
