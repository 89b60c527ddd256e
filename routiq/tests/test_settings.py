import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRONG_SECRET = "k7Qm2xVd9RtZ4pLw8sNc3bHf6jYg1aUe5oTi0rKy-production-like-secret"
ENCRYPTION_KEY = "cHJvZHVjdGlvbi1rZXktZm9yLXNldHRpbmdzLXRzdA=="
# The production environment the README documents; `check --deploy` must have nothing to say about it.
PRODUCTION_ENV = {
    "DEBUG": "0",
    "DJANGO_SECRET_KEY": STRONG_SECRET,
    "ROUTIQ_ENCRYPTION_KEYS": ENCRYPTION_KEY,
    "ALLOWED_HOSTS": "portal.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://portal.example.com",
    "BEHIND_TLS_PROXY": "1",
    "SECURE_SSL_REDIRECT": "1",
}
# Settings read from the environment that a developer's shell (or `make test`) may have set.
UNSET = ("DEBUG", "DJANGO_SECRET_KEY", "ROUTIQ_ENCRYPTION_KEYS", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS",
         "BEHIND_TLS_PROXY", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
         "SECURE_HSTS_PRELOAD")


def run_python(args, **env):
    clean = {key: value for key, value in os.environ.items() if key not in UNSET}
    return subprocess.run([sys.executable, *args], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True)


def import_settings(**env):
    return run_python(["-c", "import routiq.settings"], **env)


def test_production_settings_refuse_the_default_secret_key():
    result = import_settings(DEBUG="0")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


@pytest.mark.parametrize("weak", [
    "a-real-secret",  # short
    "ab" * 40,  # long, but only two distinct characters
    "django-insecure-" + STRONG_SECRET,  # startproject's placeholder prefix
])
def test_production_settings_refuse_a_weak_secret_key(weak):
    result = import_settings(DEBUG="0", DJANGO_SECRET_KEY=weak, ROUTIQ_ENCRYPTION_KEYS=ENCRYPTION_KEY)

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is too weak" in result.stderr


def test_development_accepts_a_short_secret_key():
    assert import_settings(DEBUG="1", DJANGO_SECRET_KEY="short").returncode == 0


def test_production_settings_refuse_to_start_without_encryption_keys():
    result = import_settings(DEBUG="0", DJANGO_SECRET_KEY=STRONG_SECRET)

    assert result.returncode != 0
    assert "ROUTIQ_ENCRYPTION_KEYS must be set" in result.stderr


def test_production_settings_start_with_a_real_secret_and_keys():
    result = import_settings(DEBUG="0", DJANGO_SECRET_KEY=STRONG_SECRET, ROUTIQ_ENCRYPTION_KEYS=ENCRYPTION_KEY)

    assert result.returncode == 0, result.stderr


def test_check_deploy_is_clean_with_the_documented_production_environment():
    result = run_python(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **PRODUCTION_ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_production_defaults_send_hsts_and_development_does_not():
    code = ("from django.conf import settings as s; "
            "print(s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD, "
            "s.SECURE_SSL_REDIRECT, s.SECURE_PROXY_SSL_HEADER)")
    production = run_python(["-c", f"import django; django.setup(); {code}"], **PRODUCTION_ENV,
                            DJANGO_SETTINGS_MODULE="routiq.settings")
    development = run_python(["-c", f"import django; django.setup(); {code}"], DEBUG="1",
                             DJANGO_SETTINGS_MODULE="routiq.settings")

    assert production.stdout.split() == ["31536000", "True", "True", "True", "('HTTP_X_FORWARDED_PROTO',", "'https')"]
    assert development.stdout.split()[:1] == ["0"] and development.stdout.split()[3] == "False"
