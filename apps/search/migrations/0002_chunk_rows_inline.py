"""Keep a chunk's embedding in its heap row instead of TOAST (docs/performance.md: retrieval).

A row holds text, Sudachi tokens, the tsvector and a 384-d vector (1.5 KB):
about 3 KB, over PostgreSQL's default 2 KB TOAST threshold, and pgvector's
``vector`` has EXTERNAL storage, so the vector was the value moved out of line.
The exact vector leg then paid three extra buffer reads (TOAST index and heap)
per row it scored: 20,056 buffers for 5,000 rows instead of 5,056. With
``toast_tuple_target`` at its maximum, rows up to ~8 KB stay whole in the heap.
Only rows written after this migration are affected; a reindex (or
``UPDATE … SET embedding = embedding::text::vector``) rewrites older ones.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("search", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE search_indexedchunk SET (toast_tuple_target = 8160)",
            "ALTER TABLE search_indexedchunk RESET (toast_tuple_target)",
        ),
    ]
