"""The vector leg's HNSW index on half-precision vectors (docs/performance.md: retrieval).

An index over ``embedding::halfvec(384)`` holds 2-byte components instead of 4:
half the pages for a filtered HNSW walk to read and for ``shared_buffers`` to
hold (≈0.8 GB instead of ≈1.6 GB of vectors at 1M chunks), and a faster build.
Only the walk's order uses it: the column stays full precision and the distance
the fusion scores is computed from it (apps/search/postgres.py). Ranking by the
rounded vectors moves a neighbour only where two cosine distances differ by
less than ≈1e-3, inside the approximation HNSW already makes.

Non-atomic so that a large table's index is built concurrently (no write lock
on the chunks while it builds); the old index is dropped after the new one
exists.
"""

from django.db import migrations


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("search", "0002_chunk_rows_inline"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS search_chunk_embedding_half ON search_indexedchunk "
            "USING hnsw ((embedding::halfvec(384)) halfvec_cosine_ops)",
            "DROP INDEX CONCURRENTLY IF EXISTS search_chunk_embedding_half",
        ),
        migrations.RunSQL(
            "DROP INDEX CONCURRENTLY IF EXISTS search_chunk_embedding",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS search_chunk_embedding ON search_indexedchunk "
            "USING hnsw (embedding vector_cosine_ops)",
        ),
    ]
