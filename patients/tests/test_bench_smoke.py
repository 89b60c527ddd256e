"""Smoke test for scripts/bench_patients.py: the benchmark at tiny sizes, so CI proves it still runs.

It runs the script as a subprocess with the suite's environment (it builds its own scratch database from
DATABASE_ADMIN_URL and measures as the app role in a second process), so it needs no database fixture.
Takes about 10 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE_DATABASE = "routiq_bench_patients_smoke"  # not the full benchmark's database: both may exist at once


def test_bench_patients_runs_at_tiny_sizes():
    if not os.environ.get("DATABASE_ADMIN_URL"):
        pytest.skip("DATABASE_ADMIN_URL is not set: the benchmark creates its own database as a superuser "
                    "(scripts/dev.py test and CI set it)")
    command = [sys.executable, str(ROOT / "scripts" / "bench_patients.py"), "--contacts", "2000",
               "--appointments", "5000", "--upsert-rows", "500", "--repeat", "3", "--database", SMOKE_DATABASE]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for expected in (
        "measuring as current_user",  # the measurement ran as a role subject to RLS (the script checks)
        "patient list page 1",
        "patient list deep page",
        "name search 'smi'",
        "phone search '5678'",
        "admin changelist page 1",
        "upsert, new rows",
        "written 500",  # the new records were all written ...
        "(written 0)",  # ... and re-sending them unchanged wrote nothing
        "rows/s",
        "ratio upsert/COPY",
        "Summary:",
    ):
        assert expected in result.stdout, f"{expected!r} missing from the output:\n{output[-6000:]}"
    assert "superuser=False bypassrls=False" in result.stdout
