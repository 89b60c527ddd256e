"""Organization.webhook_token (filled for existing organizations, then unique and required) and
ApiCredential.webhook_secret_ciphertext."""

from django.db import migrations, models

import tenants.models


def fill_tokens(apps, schema_editor):
    Organization = apps.get_model("tenants", "Organization")
    for organization in Organization.objects.filter(webhook_token__isnull=True).only("pk"):
        organization.webhook_token = tenants.models.new_webhook_token()
        organization.save(update_fields=["webhook_token"])


class Migration(migrations.Migration):

    dependencies = [
        ("tenants", "0009_synccheckpoint_cursor"),
    ]

    operations = [
        migrations.AddField(
            model_name="organization",
            name="webhook_token",
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.RunPython(fill_tokens, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="organization",
            name="webhook_token",
            field=models.CharField(
                default=tenants.models.new_webhook_token, editable=False, max_length=64, unique=True
            ),
        ),
        migrations.AddField(
            model_name="apicredential",
            name="webhook_secret_ciphertext",
            field=models.TextField(blank=True, default=""),
        ),
    ]
