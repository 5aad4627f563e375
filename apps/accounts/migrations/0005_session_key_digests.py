"""Session keys are stored only as digests (apps/accounts/session_keys.py).

* ``accounts.Session`` is the new session table (engine
  ``apps.accounts.session_store``); its primary key is the digest of the
  session key.
* ``OIDCSession.session_key``: each raw key is replaced with its digest. The
  step runs while the field is still a plain ``CharField`` (forwards: before
  the ``AlterField``), so it reads and writes the raw column. A value that is
  already a digest (40 hex characters; Django's keys have 32) is left alone: a
  re-run, or a row written by new code during the deploy.
* ``django_session`` (the old table, whose primary key was the cookie value
  itself) is emptied: the new engine never reads it, and its rows would be
  live cookies in every later backup until they expire. Everyone signs in
  once after the upgrade.

Backwards: digests cannot be turned back into keys, so the ``OIDCSession``
rows are deleted, and the new session table is dropped: everyone signs in
again after a downgrade as well.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import migrations, models

from apps.accounts.session_keys import SessionKeyDigestField, session_key_digest

DIGEST = re.compile(r"[0-9a-f]{40}")


def hash_oidc_session_keys(apps: Any, schema_editor: Any) -> None:
    OIDCSession = apps.get_model("accounts", "OIDCSession")
    rows = OIDCSession.objects.order_by("pk").values_list("pk", "session_key")
    for pk, key in list(rows):
        if key and not DIGEST.fullmatch(key):
            OIDCSession.objects.filter(pk=pk).update(session_key=session_key_digest(key))


def drop_oidc_sessions(apps: Any, schema_editor: Any) -> None:
    apps.get_model("accounts", "OIDCSession").objects.all().delete()


def empty_old_session_table(apps: Any, schema_editor: Any) -> None:
    apps.get_model("sessions", "Session").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_oidcsession_tokens_encrypted"),
        ("sessions", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Session",
            fields=[
                (
                    "session_key",
                    SessionKeyDigestField(max_length=40, primary_key=True, serialize=False),
                ),
                ("session_data", models.TextField()),
                ("expire_date", models.DateTimeField(db_index=True)),
            ],
            options={
                "verbose_name": "session",
                "verbose_name_plural": "sessions",
                "abstract": False,
            },
        ),
        migrations.RunPython(hash_oidc_session_keys, drop_oidc_sessions),
        migrations.AlterField(
            model_name="oidcsession",
            name="session_key",
            field=SessionKeyDigestField(max_length=40, unique=True),
        ),
        migrations.RunPython(empty_old_session_table, migrations.RunPython.noop),
    ]
