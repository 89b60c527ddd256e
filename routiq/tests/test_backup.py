"""Backup and restore: a dump restored into a fresh database serves the same patients, as the app role through
the portal; one organization's export holds its data and none of another's (and no credential secret)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from psycopg import sql

from patients.models import Contact
from routiq.backup import with_database
from routiq.testing import clerk_fixtures
from tenants.credentials import credential_set
from tenants.models import Organization
from tenants.rls.binding import bind_organization

ROOT = Path(__file__).resolve().parents[2]
ADMIN_URL = os.environ.get("DATABASE_ADMIN_URL", "")
APP_URL = os.environ.get("ROUTIQ_TEST_APP_URL", "")
pytestmark = pytest.mark.skipif(not (ADMIN_URL and APP_URL), reason="needs DATABASE_ADMIN_URL (make test sets it)")

# The portal, in a process of its own, connected as the app role to the database named in argv[1].
SERVE_PATIENTS = """
import sys, django
django.setup()
from django.test import Client
dashboard = Client().get("/", HTTP_AUTHORIZATION=sys.argv[1])
page = Client().get("/patients/", HTTP_HX_REQUEST="true", HTTP_AUTHORIZATION=sys.argv[1])
print(dashboard.status_code, page.status_code)
print(page.content.decode())
"""


def patient_page(database_url: str, token: str) -> tuple[str, str]:
    """("<dashboard status> <patient list status>", the patient list's HTML)."""
    env = {**os.environ, "DATABASE_URL": database_url, "CLERK_JWT_KEY": clerk_fixtures.test_signing_key().public_pem(),
           "CLERK_AUTHORIZED_PARTIES": clerk_fixtures.AUTHORIZED_PARTY}
    done = subprocess.run([sys.executable, "-c", SERVE_PATIENTS, f"Bearer {token}"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    statuses, _, body = done.stdout.partition("\n")
    return statuses, body


def seed(organization, last_name: str) -> None:
    with bind_organization(organization):
        Contact.objects.bulk_create([Contact(organization=organization, first_name=first, last_name=last_name)
                                     for first in ("Ada", "Grace", "Alan")])


@pytest.mark.django_db(transaction=True)
def test_a_restored_backup_serves_the_same_patients(tmp_path, mint):
    organization = Organization.objects.get(clerk_org_id="org_test_harbour")
    seed(organization, "Restorable")
    token = mint(organization, user_id="user_backup", role="member")
    live_url = with_database(APP_URL, settings.DATABASES["default"]["NAME"])
    before = patient_page(live_url, token)
    assert before[0] == "200 200" and before[1].count("Restorable") == 3

    dump = tmp_path / "routiq.dump"
    call_command("backup_database", str(dump))
    restored = f"test_routiq_restored_{uuid.uuid4().hex[:8]}"
    try:
        call_command("restore_database", str(dump), "--into", restored)
        after = patient_page(with_database(APP_URL, restored), token)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(restored)))
    assert after == before


@pytest.mark.django_db(transaction=True)
def test_an_organizations_export_holds_its_data_only(tmp_path):
    harbour = Organization.objects.get(clerk_org_id="org_test_harbour")
    summit = Organization.objects.get(clerk_org_id="org_test_summit")
    seed(harbour, "Exportable")
    seed(summit, "Otherclinic")
    with bind_organization(harbour):
        credential_set(organization=harbour, provider="cliniko", secret="never-in-an-export-au1")

    output = tmp_path / "harbour.tar.gz"
    call_command("export_organization", harbour.clerk_org_id, str(output))

    with tarfile.open(output) as archive:
        names = archive.getnames()
        schema_sql = archive.extractfile(f"{harbour.slug}/schema.sql").read().decode()
        public = json.loads(archive.extractfile(f"{harbour.slug}/public.json").read())
    assert sorted(names) == [f"{harbour.slug}/public.json", f"{harbour.slug}/schema.sql"]
    assert schema_sql.count("Exportable") == 3 and "Otherclinic" not in schema_sql
    assert summit.schema_name not in schema_sql
    assert public["organization"]["id"] == str(harbour.pk)
    assert [c["provider"] for c in public["api_credentials"]] == ["cliniko"]
    everything = json.dumps(public)
    assert "never-in-an-export" not in everything and "secret_ciphertext" not in everything
    assert str(summit.pk) not in everything


def test_unconfigured_backups_say_what_to_set(monkeypatch):
    monkeypatch.delenv("DATABASE_ADMIN_URL", raising=False)
    monkeypatch.delenv("DATABASE_BACKUP_URL", raising=False)
    with pytest.raises(CommandError, match="DATABASE_BACKUP_URL"):
        call_command("backup_database", "/tmp/never-written.dump")
