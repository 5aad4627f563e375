"""Let the lexical leg use its GIN index under row-level security (docs/performance.md: retrieval).

With RLS on ``search_indexedchunk`` (the ``ministry_isolation`` policy), PostgreSQL
uses a query's own condition as an index condition only if its function is
LEAKPROOF: otherwise it could run on another ministry's row before the policy
has hidden it. ``tsv @@ tsquery`` (``ts_match_vq``) is not marked so, so every
lexical search scanned all of the caller's rows and tested each one, however
selective its words: the GIN index on ``tsv`` was never used by the application
(EXPLAIN as the application role: "Index Scan using search_chunk_ws_doc …
Filter: (tsv @@ …)"; as a superuser, who bypasses RLS, a 0.7 ms GIN bitmap scan).

Security: ``ts_match_vq`` returns whether a tsvector matches a tsquery. It reads
only its two arguments, writes nothing and raises no error that depends on
them, so running it on a row the policy then removes tells nobody anything about
that row: that is what LEAKPROOF promises. The policy itself is unchanged and
still hides other ministries' rows, and every statement still names
``ministry_id`` and the workspaces (DESIGN.md invariants 4 and 12).

Only a superuser may mark a function LEAKPROOF. Where the login role is one (the
embedded PostgreSQL of ``make run`` / ``make test``) this migration does it; in
production the DBA runs, once, as a superuser (docs/search.md)::

    ALTER FUNCTION pg_catalog.ts_match_vq(tsvector, tsquery) LEAKPROOF;

Without it searches return the same results, more slowly.
"""

from django.db import migrations

SIGNATURE = "pg_catalog.ts_match_vq(tsvector, tsquery)"


def _as_login_role(schema_editor, statement: str) -> None:
    """Run ``statement`` as the login role if it is a superuser; otherwise leave it to the DBA."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        role = cursor.fetchone()[0]
        cursor.execute("RESET ROLE")
        try:
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = session_user")
            row = cursor.fetchone()
            if row and row[0]:
                cursor.execute(statement)
        finally:
            cursor.execute(f'SET ROLE "{role}"')


def mark_leakproof(apps, schema_editor):
    _as_login_role(schema_editor, f"ALTER FUNCTION {SIGNATURE} LEAKPROOF")


def unmark_leakproof(apps, schema_editor):
    _as_login_role(schema_editor, f"ALTER FUNCTION {SIGNATURE} NOT LEAKPROOF")


class Migration(migrations.Migration):
    dependencies = [
        ("search", "0003_hnsw_halfvec"),
    ]

    operations = [
        migrations.RunPython(mark_leakproof, unmark_leakproof),
    ]
