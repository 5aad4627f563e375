"""Move existing secret references into the upstream namespace (docs/security.md).

Before, any ``env:VAR`` was accepted, so a row may name ``env:DATABASE_URL``.
Now only ``env:GENNAI_UPSTREAM_<NAME>`` and ``file:<name>`` resolve. Each old
``env:NAME`` becomes ``env:GENNAI_UPSTREAM_NAME`` (the operator sets that
variable to the key; a platform credential is never copied there, so an old
``env:DATABASE_URL`` now names an empty variable), and anything else that is
not a valid reference is cleared. Not reversible on purpose.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import migrations

_ENV_RE = re.compile(r"env:(GENNAI_UPSTREAM_[A-Z0-9_]+)")
_FILE_RE = re.compile(r"file:([A-Za-z0-9][A-Za-z0-9._-]{0,127})")
_OLD_ENV_RE = re.compile(r"env:([A-Z_][A-Z0-9_]{0,127})")
# Kept in step with apps.registry.secrets.RESERVED_ENV_NAMES (a migration must not import app code).
_RESERVED = {
    "GENNAI_UPSTREAM_CONNECT_TIMEOUT",
    "GENNAI_UPSTREAM_FIRST_TOKEN_TIMEOUT",
    "GENNAI_UPSTREAM_READ_TIMEOUT",
    "GENNAI_UPSTREAM_ALLOWED_HOSTS",
    "GENNAI_UPSTREAM_SECRETS_DIR",
}


def converted(ref: str) -> str:
    """The namespaced form of an old reference ("" when it cannot be one)."""
    if not ref:
        return ""
    if (m := _ENV_RE.fullmatch(ref)) is not None:
        return "" if m.group(1) in _RESERVED else ref
    if (m := _FILE_RE.fullmatch(ref)) is not None:
        return "" if ".." in m.group(1) else ref
    if (m := _OLD_ENV_RE.fullmatch(ref)) is not None:
        name = "GENNAI_UPSTREAM_" + m.group(1).lstrip("_")
        return "" if name in _RESERVED or name == "GENNAI_UPSTREAM_" else f"env:{name}"
    return ""


def forwards(apps: Any, schema_editor: Any) -> None:
    Deployment = apps.get_model("registry", "Deployment")
    for deployment in Deployment.objects.exclude(secret_ref=""):
        new = converted(deployment.secret_ref)
        if new != deployment.secret_ref:
            Deployment.objects.filter(pk=deployment.pk).update(secret_ref=new)


class Migration(migrations.Migration):
    dependencies = [("registry", "0002_deployment_zone_changerequest")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
