"""Smoke test for scripts/bench_sync_rate.py at tiny sizes (real rqworker processes, the stand-in Cliniko with a
per-key limit): CI proves the benchmark still runs and that no run of it draws a 429."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_sync_rate_runs_at_tiny_sizes_without_a_429():
    if not os.environ.get("DATABASE_ADMIN_URL"):
        pytest.skip("DATABASE_ADMIN_URL is not set: the benchmark creates its own database as a superuser "
                    "(scripts/dev.py test and CI set it)")
    command = [sys.executable, str(ROOT / "scripts" / "bench_sync_rate.py"), "--organizations", "3", "--workers", "2",
               "--patients", "500", "--rate", "60", "--shared-key-organizations", "2",
               "--database", "routiq_bench_sync_smoke"]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert result.stdout.count("429s received: 0;") == 2, output[-6000:]  # both phases
    assert "share of the allowed rate used" in result.stdout and "Summary:" in result.stdout, output[-6000:]
