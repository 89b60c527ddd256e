"""Tests that commit: pytest-django's transactional tests and live_server work here.

They flush after each test, which must empty the append-only audit log (the owner's break-glass inside the
flush's transaction, tenants/rls/pgbackend/operations.py) and drop the organizations' schemas, while the
production guard stays on for everyone else.
"""

from __future__ import annotations

import psycopg
import pytest
import requests
from django.conf import settings
from django.db import connection
from psycopg import sql

from patients.models import Contact
from tenants.audit import audit_record
from tenants.models import AuditLog, Organization
from tenants.rls.binding import bind_organization


def committed_audit_rows(action: str) -> int:
    """Counted on a connection of its own, which sees only committed rows, as the platform role (FORCE RLS
    binds the owner too; the platform role reads every organization's audit rows)."""
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as other, other.cursor() as cursor:
        cursor.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(settings.DATABASE_PLATFORM_ROLE)))
        cursor.execute("SELECT count(*) FROM audit_logs WHERE action = %s", [action])
        row = cursor.fetchone()
        assert row is not None
        return row[0]


@pytest.mark.django_db(transaction=True)
def test_a_transactional_test_commits_audit_rows_and_the_flush_after_it_still_works(org_a):
    with bind_organization(org_a):
        audit_record(action="test.committed", organization=org_a, actor_label="test")
        assert AuditLog.objects.filter(action="test.committed").count() == 1
    assert committed_audit_rows("test.committed") == 1


@pytest.mark.django_db(transaction=True)
def test_the_previous_flush_emptied_the_audit_log_and_left_the_guard_on(org_a):
    assert committed_audit_rows("test.committed") == 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'audit_logs_no_truncate' AND tgenabled = 'O'"
        )
        (enabled_guards,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'audit_logs_no_truncate'")
        assert enabled_guards == cursor.fetchone()[0] >= 2
    assert Organization.objects.filter(clerk_org_id__in=["org_test_harbour", "org_test_summit"]).count() == 2


def test_the_patient_page_through_a_live_server(live_server, mint, org_a):
    with bind_organization(org_a):
        Contact.objects.create(organization=org_a, first_name="Livia", last_name="Server")

    response = requests.get(
        f"{live_server.url}/patients/", headers={"Authorization": f"Bearer {mint(org_a)}"}, timeout=10
    )

    assert response.status_code == 200
    assert "Server, Livia" in response.text
