"""Every API key expires; keys record why they were revoked and whether a platform operator issued them."""

from datetime import timedelta

from django.conf import settings
from django.db import migrations, models
from django.utils import timezone


def backfill(apps, schema_editor):
    ApiKey = apps.get_model("gateway", "ApiKey")
    # Keys without a creator were issued by the management command (the only way
    # to create one without an actor before this migration).
    ApiKey.objects.filter(created_by__isnull=True).update(platform_issued=True)
    # Keys that never expired get the maximum lifetime from today (not from their
    # creation: that would cut systems off without warning on deploy day).
    lifetime = timedelta(days=getattr(settings, "GENNAI_API_KEY_MAX_LIFETIME_DAYS", 90))
    ApiKey.objects.filter(expires_at__isnull=True).update(expires_at=timezone.now() + lifetime)
    ApiKey.objects.filter(revoked_at__isnull=False).update(revoked_reason="admin")


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="platform_issued",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="apikey",
            name="revoked_reason",
            field=models.CharField(
                blank=True,
                choices=[
                    ("admin", "管理者が失効"),
                    ("creator_not_admin", "作成者が管理者でなくなったため失効"),
                ],
                max_length=32,
            ),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="apikey",
            name="expires_at",
            field=models.DateTimeField(verbose_name="有効期限"),
        ),
    ]
