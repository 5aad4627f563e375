"""The exact vector leg reads its vectors from an index, not from the table (docs/performance.md: retrieval).

Below ``PostgresBackend.exact_vector_threshold`` visible rows the vector leg
computes the distance to every row of the caller's workspaces. Those rows are
≈3 KB (text, tokens, tsvector and the 1.5 KB vector), so 5,000 of them were
5,056 heap pages. This btree carries the same keys as ``search_chunk_ws_doc``
and includes ``id`` and ``embedding``, so the leg is an index-only scan over
≈5 entries per page, packed by ministry and workspace (100k chunks, 5 workspaces:
1,274 buffers instead of 5,056, 38 → 18 ms under load). The heap is read only
for pages the visibility map does not yet mark all-visible (autovacuum sets them
after inserts).

Cost: ≈1.6 KB of index per chunk (≈1.6 GB at 1M chunks) and that much more to
write when chunks are indexed. ``search_chunk_ws_doc`` stays: the row count and
the lexical leg's bitmaps read it, 25× smaller.

Non-atomic so that the index is built concurrently (no write lock on the
chunks while it builds).
"""

from django.db import migrations


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("search", "0004_tsvector_match_leakproof"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS search_chunk_ws_doc_vec ON search_indexedchunk "
            "(ministry_id, workspace_id, document_id) INCLUDE (id, embedding)",
            "DROP INDEX CONCURRENTLY IF EXISTS search_chunk_ws_doc_vec",
        ),
    ]
