"""API keys may be limited to workspaces for /v1/search (issue 7); existing keys stay unlimited (empty)."""

import django.contrib.postgres.fields
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0002_key_expiry_required"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="allowed_workspace_ids",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.BigIntegerField(), blank=True, default=list, size=None
            ),
        ),
    ]
