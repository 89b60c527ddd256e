import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def import_settings(**env):
    unset = ("DEBUG", "DJANGO_SECRET_KEY", "ROUTIQ_ENCRYPTION_KEYS")
    clean = {key: value for key, value in os.environ.items() if key not in unset}
    return subprocess.run(
        [sys.executable, "-c", "import routiq.settings"], env={**clean, **env}, cwd=ROOT, capture_output=True,
        text=True,
    )


def test_production_settings_refuse_the_default_secret_key():
    result = import_settings(DEBUG="0")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_production_settings_refuse_to_start_without_encryption_keys():
    result = import_settings(DEBUG="0", DJANGO_SECRET_KEY="a-real-secret")

    assert result.returncode != 0
    assert "ROUTIQ_ENCRYPTION_KEYS must be set" in result.stderr


def test_production_settings_start_with_a_real_secret_and_keys():
    key = "cHJvZHVjdGlvbi1rZXktZm9yLXNldHRpbmdzLXRzdA=="
    assert import_settings(DEBUG="0", DJANGO_SECRET_KEY="a-real-secret", ROUTIQ_ENCRYPTION_KEYS=key).returncode == 0
