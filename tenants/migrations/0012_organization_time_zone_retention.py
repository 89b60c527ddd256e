"""Organization.time_zone (the clinic's days and months on the dashboard) and message_retention_months (the
archival of old messages). Billing adds its own fields in a separate migration; the two may be renumbered
when merged."""

from django.db import migrations, models

import tenants.models


class Migration(migrations.Migration):
    dependencies = [("tenants", "0011_organization_billing_state")]

    operations = [
        migrations.AddField(
            model_name="organization",
            name="time_zone",
            field=models.CharField(default="Australia/Sydney", help_text="IANA time zone, e.g. Australia/Sydney.",
                                   max_length=64, validators=[tenants.models.validate_time_zone]),
        ),
        migrations.AddField(
            model_name="organization",
            name="message_retention_months",
            field=models.PositiveSmallIntegerField(
                blank=True, null=True, help_text="Archive messages older than this (months). Empty: the platform default."),
        ),
    ]
