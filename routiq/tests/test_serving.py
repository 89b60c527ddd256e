"""Production serving of static files: collectstatic writes content-hashed, compressed copies, and WhiteNoise
serves a hashed name with a one-year immutable Cache-Control (and never the pages' no-store)."""

from __future__ import annotations

import re

from django.core.management import call_command
from django.templatetags.static import static
from django.test import Client


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
