"""Smoke test for scripts/bench_dashboard.py: the benchmark at tiny sizes, so CI proves it still runs (like
patients/tests/test_bench_smoke.py: a subprocess with its own scratch database). Takes about 10 s."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE_DATABASE = "routiq_bench_dashboard_smoke"


def test_bench_dashboard_runs_at_tiny_sizes():
    if not os.environ.get("DATABASE_ADMIN_URL"):
        pytest.skip("DATABASE_ADMIN_URL is not set: the benchmark creates its own database as a superuser "
                    "(scripts/dev.py test and CI set it)")
    command = [sys.executable, str(ROOT / "scripts" / "bench_dashboard.py"), "--contacts", "2000",
               "--appointments", "5000", "--messages", "5000", "--conversations", "500", "--repeat", "3",
               "--database", SMOKE_DATABASE]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for expected in (
        "superuser=False bypassrls=False",  # measured as a role bound by RLS (the script checks)
        "REFRESH CONCURRENTLY mv_active_patients_summary",
        "REFRESH CONCURRENTLY mv_active_patients_monthly",
        "REFRESH CONCURRENTLY mv_conversation_metrics_daily",
        "refresh_patient_metrics() (the job)",
        "refresh_conversation_metrics() (the job)",
        "plan of lapsing patients                         OK",
        "plan of waiting conversations                    OK",
        "dashboard page (queries + rendering)",
        "GET / through every middleware (session)",
        "plans OK",
        "Summary:",
    ):
        assert expected in result.stdout, f"{expected!r} missing from the output:\n{output[-6000:]}"
