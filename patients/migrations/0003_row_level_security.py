from django.db import migrations

from tenants.rls.policies import enable_rls


class Migration(migrations.Migration):
    dependencies = [("patients", "0002_initial")]

    operations = [enable_rls(table) for table in ["contacts", "appointments", "active_patients"]]
