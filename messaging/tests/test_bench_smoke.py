"""Smoke test for scripts/bench_messaging.py: the benchmark at tiny sizes, so CI proves it still runs.

It runs the script as a subprocess with the suite's environment (it builds its own scratch database from
DATABASE_ADMIN_URL and measures as the app role in a second process), so it needs no database fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE_DATABASE = "routiq_bench_messaging_smoke"  # not the full benchmark's database: both may exist at once


def test_bench_messaging_runs_at_tiny_sizes():
    if not os.environ.get("DATABASE_ADMIN_URL"):
        pytest.skip("DATABASE_ADMIN_URL is not set: the benchmark creates its own database as a superuser "
                    "(scripts/dev.py test and CI set it)")
    command = [sys.executable, str(ROOT / "scripts" / "bench_messaging.py"), "--messages", "3000",
               "--conversations", "200", "--thread-messages", "400", "--patient-messages", "300",
               "--patient-appointments", "20", "--upsert-rows", "200", "--webhooks", "20", "--repeat", "3",
               "--database", SMOKE_DATABASE]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "superuser=False bypassrls=False" in result.stdout  # measured as a role subject to RLS
    assert "FORCE RLS=True, rows visible with nothing bound: 0" in result.stdout
    for expected in (
        "inbox page 1 ",
        "inbox deep page",
        "thread page 1 (400 messages)",
        "timeline page 1 (messages + appointments)",
        "search common 'appointment' (inbox)",
        "search rare 'sciatica' (timeline)",
        "upsert, new rows",
        "(written 200)",  # the new messages were all written ...
        "(written 0)",  # ... and re-sending them unchanged wrote nothing
        "webhook deliveries processed",
        "deliveries/s",
        "answers {'processed': 20}",  # every signed delivery verified, recorded and applied
        "Summary:",
    ):
        assert expected in result.stdout, f"{expected!r} missing from the output:\n{output[-6000:]}"
    assert "skipped:" not in result.stdout, output[-6000:]  # every page's selector still has the shape measured
