from django.db import migrations

from tenants.rls.policies import enable_rls


class Migration(migrations.Migration):
    dependencies = [("messaging", "0003_initial")]

    operations = [enable_rls(table) for table in ["conversations", "messages"]]
