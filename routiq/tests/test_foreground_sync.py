"""The foreground run behind ``manage.py sync --now`` and ``sync_chatwoot --now``: a bar on stderr, and the
failures an operator can act on as a one-line CommandError."""

from __future__ import annotations

import io

import pytest
from django.core.management.base import BaseCommand, CommandError

from routiq.foreground_sync import run_with_progress
from routiq.http import VendorError
from routiq.sync import PageProgress, SyncAlreadyRunning


def command() -> BaseCommand:
    return BaseCommand(stdout=io.StringIO(), stderr=io.StringIO())


def test_the_run_reports_its_pages_on_stderr_and_returns_its_result():
    cmd = command()

    def run(on_page):
        on_page(PageProgress(stream="patients", records=3, total_entries=None))
        on_page(PageProgress(stream="patients/archived", records=2, total_entries=None))
        return "the log"

    assert run_with_progress(cmd, resource="patients", run=run) == "the log"
    bar = cmd.stderr.getvalue()
    assert "patients: " in bar and "5rec" in bar and "patients/archived" in bar
    assert cmd.stdout.getvalue() == ""


@pytest.mark.parametrize(("error", "message"), [
    (SyncAlreadyRunning("contacts is already syncing"), "contacts is already syncing"),
    (VendorError("chatwoot", "HTTP 503"), "contacts sync failed: chatwoot: HTTP 503"),
])
def test_a_failure_an_operator_can_act_on_is_a_command_error(error, message):
    def run(on_page):
        raise error

    with pytest.raises(CommandError, match=message) as caught:
        run_with_progress(command(), resource="contacts", run=run)
    assert caught.value.__cause__ is error


def test_any_other_failure_is_left_to_show_its_traceback():
    def run(on_page):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_with_progress(command(), resource="contacts", run=run)
