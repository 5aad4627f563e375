import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("quotas", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="usagerecord",
            name="prompt_tokens_estimated",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="usagerecord",
            name="request_id",
            field=models.UUIDField(blank=True, editable=False, null=True),
        ),
        migrations.AlterField(
            model_name="usagerecord",
            name="created_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AddConstraint(
            model_name="usagerecord",
            constraint=models.UniqueConstraint(
                fields=("ministry", "request_id"), name="usage_ministry_request_uniq"
            ),
        ),
    ]
