"""Production serving of static files: collectstatic writes content-hashed, compressed copies, and WhiteNoise
serves a hashed name with a one-year immutable Cache-Control (and never the pages' no-store)."""

from __future__ import annotations

import gc
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.templatetags.static import static
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]


def test_collected_static_files_are_served_under_hashed_names_with_long_cache_headers(settings, tmp_path):
    settings.DEBUG = False
    settings.STATIC_ROOT = tmp_path / "staticfiles"
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}}
    call_command("collectstatic", "--noinput", verbosity=0)

    url = static("js/htmx-2.0.4.min.js")
    assert re.fullmatch(r"/static/js/htmx-2\.0\.4\.min\.[0-9a-f]{12}\.js", url)
    plain = Client().get(url)
    compressed = Client().get(url, HTTP_ACCEPT_ENCODING="gzip, br")

    assert plain.status_code == 200 and compressed.status_code == 200
    for response in (plain, compressed):
        assert response["Cache-Control"] == "max-age=315360000, public, immutable"
    assert compressed["Content-Encoding"] in {"gzip", "br"}
    assert Client().get("/static/js/htmx-2.0.4.min.js")["Cache-Control"] == "max-age=60, public"  # unhashed


def test_gunicorn_refuses_to_start_when_a_system_check_fails():
    """gunicorn.conf.py runs the system checks before forking workers: a refused pooler stops the server."""
    environment = {**os.environ, "DATABASE_POOLER": "pgbouncer-transaction"}
    done = subprocess.run([sys.executable, "-m", "gunicorn", "routiq.wsgi", "--bind", "127.0.0.1:0", "--workers", "1"],
                          cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)

    assert done.returncode != 0
    assert "refusing to start" in done.stderr and "routiq.E101" in done.stderr
    assert "Booting worker" not in done.stderr


@pytest.mark.django_db
def test_the_load_tests_bare_view_is_not_mounted_unless_asked_for(client, settings):
    assert settings.ROUTIQ_LOADTEST_BARE_VIEW is False
    assert client.get("/loadtest/bare-patients/").status_code == 404


def test_a_gunicorn_worker_freezes_what_it_loaded_at_start_out_of_the_collectors_reach():
    settings_module = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    gc.unfreeze()
    try:
        settings_module["post_worker_init"](worker=None)

        assert gc.get_freeze_count() > 10_000  # this process's modules, Django's among them
    finally:
        gc.unfreeze()
