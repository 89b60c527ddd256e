from django.db import migrations

from tenants.rls.policies import enable_rls

# Public tables that carry organization_id. They also admit binding.platform_access() (platform admin,
# scheduler fan-out); tenant tables never do.
PUBLIC_TABLES = ["organization_members", "api_credentials", "sync_logs", "audit_logs"]


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]

    operations = [enable_rls(table, platform_readable=True) for table in PUBLIC_TABLES]
