"""The billing tables that carry organization_id get the public tables' two policies: the bound organization
only, and the platform role (the admin, and the Stripe webhook for events that name no organization)."""

from django.db import migrations

from tenants.rls.policies import forced_public_table_sql

TABLES = ["billing_stripe_events", "billing_invoices"]


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial"), ("tenants", "0011_organization_billing_state")]

    operations = [
        migrations.RunSQL(
            sql=[statement for table in TABLES for statement in forced_public_table_sql(table)],
            reverse_sql=[statement for table in TABLES for statement in (
                f"DROP POLICY IF EXISTS platform_access ON {table}",
                f"DROP POLICY IF EXISTS organization_isolation ON {table}",
                f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
                f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
            )],
        )
    ]
