# Monthly RANGE partitions of quotas_usagerecord on created_at (issue 8, ADR 0008).
#
# Irreversible: going back would mean rebuilding an unpartitioned table; restore
# from a backup instead. Run it in a maintenance window: the copy holds an
# exclusive lock on the ledger while it runs (docs/performance.md, "Usage ledger").

from typing import Any

from django.db import migrations, models


def partition(apps: Any, schema_editor: Any) -> None:
    from apps.quotas.partitions import convert_to_partitioned

    convert_to_partitioned(using=schema_editor.connection.alias)


class Migration(migrations.Migration):
    dependencies = [
        ("quotas", "0005_merge_budgets_and_rollups"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="usagerecord", name="usage_ministry_request_uniq"),
                migrations.AddConstraint(
                    model_name="usagerecord",
                    constraint=models.UniqueConstraint(
                        fields=("ministry", "request_id", "created_at"), name="usage_ministry_request_at_uniq"
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(partition)],
        ),
    ]
