# Hash partitions of search_indexedchunk by workspace_id (apps/search/partitions.py;
# docs/performance.md, "Hybrid retrieval", fourth round).
#
# Reversible (backwards rebuilds the single table of 0005). Run it in a maintenance
# window: the copy holds an exclusive lock on the search index while it runs
# (docs/search.md).

from typing import Any

from django.db import migrations, models


def partition(apps: Any, schema_editor: Any) -> None:
    from apps.search.partitions import convert_to_partitioned

    convert_to_partitioned(using=schema_editor.connection.alias)


def unpartition(apps: Any, schema_editor: Any) -> None:
    from apps.search.partitions import convert_to_plain

    convert_to_plain(using=schema_editor.connection.alias)


class Migration(migrations.Migration):
    dependencies = [
        ("search", "0005_vector_leg_covering_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="indexedchunk", name="search_chunk_unique_per_ministry"),
                migrations.AddConstraint(
                    model_name="indexedchunk",
                    constraint=models.UniqueConstraint(
                        fields=("ministry", "workspace_id", "chunk_id"), name="search_chunk_unique_per_ministry"
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(partition, unpartition)],
        ),
    ]
