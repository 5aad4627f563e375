"""The `make run` environment file, ``.gennai/dev/env``.

``make run`` starts embedded PostgreSQL and Redis on ports of its own choosing
and passes their URLs to its children. Another terminal does not inherit that
environment, so ``make run`` also writes the URLs to this file while it runs,
and ``gennai.settings.dev`` reads it: a command such as
``make api-key`` (or ``DJANGO_SETTINGS_MODULE=gennai.settings.dev manage.py …``)
from a second terminal then reaches the same database. Variables already set in
the environment win over the file. Only development settings read it; production
never does.

Format: one ``NAME=value`` per line (values shell-quoted, so ``set -a; . .gennai/dev/env``
works too); blank lines and ``#`` comments are ignored.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV_ENV_FILE = ROOT / ".gennai" / "dev" / "env"

#: What `make run` shares with other terminals: the servers' URLs, nothing else.
SHARED_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "OIDC_ISSUER",
    "OIDC_CLIENT_ID",
    "OIDC_CLIENT_SECRET",
    "GENNAI_IDP_URL",
    "GENNAI_IDP_DATABASE_URL",
    "GENNAI_PG_ADMIN_URL",
)


def dev_env_path() -> Path:
    """The file to read and write: ``GENNAI_DEV_ENV_FILE`` if set, else ``.gennai/dev/env``."""
    override = os.environ.get("GENNAI_DEV_ENV_FILE", "").strip()
    return Path(override) if override else DEV_ENV_FILE


def render(values: Mapping[str, str]) -> str:
    lines = ["# Written by `make run` while it runs (gennai/devstack/envfile.py); removed when it stops."]
    lines += [f"{name}={shlex.quote(values[name])}" for name in SHARED_VARIABLES if values.get(name)]
    return "\n".join(lines) + "\n"


def write(path: Path, values: Mapping[str, str]) -> str:
    """Write the shared variables of ``values`` to ``path`` (owner-only: it holds URLs with passwords)."""
    text = render(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # also when the file existed with wider permissions
        out.write(text)
    return text


def remove_if_unchanged(path: Path, text: str) -> None:
    """Delete the file we wrote, unless another `make run` has replaced it since."""
    try:
        if path.read_text() == text:
            path.unlink()
    except FileNotFoundError:
        pass


def parse(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, raw = line.partition("=")
        words = shlex.split(raw)
        values[name.strip()] = words[0] if words else ""
    return values


def load_into_environ(path: Path | None = None) -> dict[str, str]:
    """Set the file's variables in ``os.environ`` where not set already; return what was set."""
    path = path or dev_env_path()
    try:
        values = parse(path.read_text())
    except FileNotFoundError:
        return {}
    applied = {name: value for name, value in values.items() if name not in os.environ}
    os.environ.update(applied)
    return applied
