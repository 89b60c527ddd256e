from django.db import migrations

from tenants.rls.policies import enable_rls


class Migration(migrations.Migration):
    dependencies = [("tenants", "0004_sync_checkpoints")]

    operations = [enable_rls("sync_checkpoints", platform_readable=True)]
