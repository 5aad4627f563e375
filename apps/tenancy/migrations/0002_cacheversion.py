"""Cache invalidation versions in PostgreSQL (docs/adr/0005-cache-versions-in-postgresql.md)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tenancy", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="CacheVersion",
            fields=[
                ("name", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("version", models.BigIntegerField()),
                ("changed_at", models.DateTimeField()),
            ],
        ),
        # Version values come from one sequence: never reused, even by a rolled-back bump.
        migrations.RunSQL(
            "CREATE SEQUENCE tenancy_cacheversion_seq",
            reverse_sql="DROP SEQUENCE tenancy_cacheversion_seq",
        ),
    ]
