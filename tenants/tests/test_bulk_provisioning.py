"""Bulk provisioning (tenants/provisioning.py): a cloned schema is the migrated one, and RLS holds for clones.

Transactional: pg_dump reads the template schema from a connection of its own, which sees committed work only.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import ProgrammingError, connection, transaction
from psycopg import sql

from patients.dashboard import dashboard_refresh
from patients.models import Contact
from routiq.testing.catalog import schema_catalog
from routiq.testing.rows import SECURITY_BARRIER_VIEWS
from tenants.jobs import provision_organization, refresh_schema_template
from tenants.models import AuditLog, Organization
from tenants.provisioning import TEMPLATE_SCHEMA, current_template, schema_template, template_stamp
from tenants.rls.binding import bind_organization
from tenants.services import organization_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.owner_role]


def as_app_role() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f'SET ROLE "{settings.DATABASE_APP_ROLE}"')


@pytest.mark.parametrize("template_from", ["template schema", "an organization's migrated schema"])
def test_a_cloned_schema_has_the_catalog_of_a_migrated_one(template_from):
    migrated = organization_create(name="Migrated Clinic", clerk_org_id="org_test_migrated", migrate=True)
    if template_from == "template schema":
        template = current_template()
        assert template.schema == TEMPLATE_SCHEMA
    else:
        template = schema_template(
            organization_create(name="Template Clinic", clerk_org_id="org_test_template", migrate=True).schema_name)
    cloned = organization_create(name="Cloned Clinic", clerk_org_id="org_test_cloned", template=template)

    expected, actual = schema_catalog(migrated.schema_name), schema_catalog(cloned.schema_name)

    assert {part: actual[part] - expected[part] for part in expected} == {part: set() for part in expected}
    assert {part: expected[part] - actual[part] for part in expected} == {part: set() for part in expected}
    # The comparison covers what a clone could miss: forced RLS, policies, the materialized views' missing grant,
    # the SECURITY DEFINER functions fixed to their schema, triggers, sequences owned inside the schema.
    forced = {row[0] for row in expected["relations"] if row[3] and row[4]}
    assert {"contacts", "messages", "messages_default"} <= forced
    assert {row[1] for row in expected["policies"]} == {"organization_isolation"}
    app_role_objects = {row[1] for row in expected["grants"] if row[2] != 0}
    assert {"contacts", "active_patients_summary"} <= app_role_objects
    assert len(expected["triggers"]) >= 6
    assert {(row[0], row[1]) for row in expected["matviews"]} == {
        (matview, True) for matview, _function in SECURITY_BARRIER_VIEWS.values()}
    assert {row[1] for row in expected["sequence_owners"]} == {"<schema>"}
    assert len(actual["django_migrations"]) >= 50 and actual["django_content_type"]
    # Nothing in the clone still names the template's schema, and the clone was recorded like any creation.
    assert template.schema not in repr(actual)
    assert AuditLog.objects.filter(action="organization.created", organization=cloned).count() == 1


def test_row_level_security_holds_for_cloned_organizations():
    call_command("create_demo_organizations", count=3, patients=2, workers=2)
    first, clone_a, clone_b = Organization.objects.filter(clerk_org_id__startswith="org_demo_").order_by("clerk_org_id")
    as_app_role()

    for organization in (first, clone_a, clone_b):
        with bind_organization(organization):
            assert Contact.objects.count() == 2
    with bind_organization(clone_a):
        connection.set_tenant(clone_b)  # the wrong schema with A's identity: nothing
        assert Contact.objects.count() == 0
        with pytest.raises(ProgrammingError, match="row-level security"), transaction.atomic():
            Contact.objects.create(organization=clone_b, first_name="Eve")

    # The dashboard's owner-run refresh works for a clone's own organization, refuses another's, and the app
    # role reads the figures only through the security-barrier views.
    with bind_organization(clone_a):
        assert dashboard_refresh(organization=clone_a)
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("SELECT organization_id, total_patients FROM {}").format(
                sql.Identifier(clone_a.schema_name, "active_patients_summary")))
            assert cursor.fetchall() == [(clone_a.pk, 0)]  # counted from active_patients: a sync fills it
            with pytest.raises(ProgrammingError, match="permission denied"), transaction.atomic():
                cursor.execute(sql.SQL("SELECT * FROM {}").format(
                    sql.Identifier(clone_a.schema_name, "mv_active_patients_summary")))
            with pytest.raises(ProgrammingError, match="bind this schema"), transaction.atomic():
                cursor.execute(sql.SQL("SELECT {}()").format(
                    sql.Identifier(clone_b.schema_name, "refresh_patient_metrics")))


def test_a_stale_template_is_rebuilt_outside_a_transaction_and_passed_over_inside_one():
    with connection.cursor() as cursor:
        cursor.execute(f"COMMENT ON SCHEMA {TEMPLATE_SCHEMA} IS 'routiq template 2000-01 0123456789abcdef'")

    with transaction.atomic():
        assert current_template() is None  # organization_create migrates, as it did before templates
        organization = organization_create(name="Inside", clerk_org_id="org_test_inside")
        assert Organization.objects.filter(pk=organization.pk).exists()
    template = current_template()

    with connection.cursor() as cursor:
        cursor.execute("SELECT obj_description(%s::regnamespace, 'pg_namespace')", [TEMPLATE_SCHEMA])
        assert cursor.fetchone()[0].startswith(template_stamp() + " ")
    assert template.schema == TEMPLATE_SCHEMA


def test_a_template_built_by_newer_code_is_left_alone():
    assert current_template() is not None
    with connection.cursor() as cursor:
        cursor.execute(f"COMMENT ON SCHEMA {TEMPLATE_SCHEMA} IS 'routiq template 2000-01 0123456789abcdef'")
        cursor.execute(f"INSERT INTO {TEMPLATE_SCHEMA}.django_migrations (app, name, applied) "
                       "VALUES ('patients', '9999_from_the_next_release', now())")

    assert current_template() is None  # this code's migrations would take it back: new schemas are migrated
    organization = organization_create(name="Older Code", clerk_org_id="org_test_older_code")
    with connection.cursor() as cursor:
        cursor.execute("SELECT obj_description(%s::regnamespace, 'pg_namespace')", [TEMPLATE_SCHEMA])
        assert cursor.fetchone()[0].startswith("routiq template 2000-01 ")
        cursor.execute(f'SELECT count(*) FROM "{organization.schema_name}".django_migrations '
                       "WHERE name = '9999_from_the_next_release'")
        assert cursor.fetchone()[0] == 0


def stale_template() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"COMMENT ON SCHEMA {TEMPLATE_SCHEMA} IS 'routiq template 2000-01 0123456789abcdef'")


def template_comment() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT obj_description(%s::regnamespace, 'pg_namespace')", [TEMPLATE_SCHEMA])
        return cursor.fetchone()[0]


def test_the_hourly_job_rebuilds_a_stale_template_before_a_clinic_signs_up():
    assert "tenants.jobs.refresh_schema_template" in {
        entry["func"] for entry in settings.ROUTIQ_SCHEDULE if entry.get("queue") == "provisioning"}
    stale_template()

    assert refresh_schema_template() == "rebuilt"

    assert template_comment().startswith(template_stamp() + " ")
    assert refresh_schema_template() == "current"


def test_a_clerk_sign_up_on_a_stale_template_is_cloned_not_migrated(caplog):
    stale_template()

    with caplog.at_level("INFO", logger="tenants.services"):
        organization_id = provision_organization("org_test_month_start", "Month Start Physio")

    assert Organization.objects.filter(pk=organization_id).exists()
    assert "by=clone" in caplog.text and "by=migrations" not in caplog.text
    assert template_comment().startswith(template_stamp() + " ")
