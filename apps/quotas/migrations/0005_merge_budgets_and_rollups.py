# Merges the two parallel 0004 migrations of issue 8 (budgets/limits and daily rollups).

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('quotas', '0004_budgets_and_limits'),
        ('quotas', '0004_usage_daily_rollup'),
    ]

    operations = []
