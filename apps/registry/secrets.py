"""Upstream API keys: references into a namespace that holds nothing else (invariant 8).

A deployment never stores a key; its ``secret_ref`` says where the key lives,
and only two places are allowed:

* ``env:GENNAI_UPSTREAM_<NAME>`` — an environment variable of that prefix
  (``NAME`` = ``[A-Z0-9_]+``), except the prefix's own configuration settings
  (:data:`RESERVED_ENV_NAMES`);
* ``file:<name>`` — a file directly named in ``GENNAI_UPSTREAM_SECRETS_DIR``
  (a mounted Kubernetes Secret, say). ``name`` is a plain file name; the
  resolved path (symlinks followed) must stay inside the directory, so
  ``file:../x``, ``file:/etc/passwd`` and a symlink pointing outside are refused.

Anything else — ``env:DATABASE_URL``, ``env:GENNAI_SECRET_KEY``,
``env:OIDC_CLIENT_SECRET``, a pasted key — is refused. This one module is used
by every layer, so they cannot drift apart: the form and the service
(:func:`validate_secret_ref`, at deployment create/update) and the provider at
call time (:func:`resolve_secret_ref`, defence in depth against rows written
before this rule or behind the service's back). Refusals never echo the
refused value (it may be a key someone pasted).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from django.utils.translation import gettext as _

ENV_PREFIX = "GENNAI_UPSTREAM_"
#: Settings that live under the prefix but are configuration, not keys: never resolvable.
RESERVED_ENV_NAMES = frozenset(
    {
        "GENNAI_UPSTREAM_CONNECT_TIMEOUT",
        "GENNAI_UPSTREAM_FIRST_TOKEN_TIMEOUT",
        "GENNAI_UPSTREAM_READ_TIMEOUT",
        "GENNAI_UPSTREAM_ALLOWED_HOSTS",
        "GENNAI_UPSTREAM_ONPREM_HOSTS",
        "GENNAI_UPSTREAM_SECRETS_DIR",
    }
)
_ENV_RE = re.compile(r"env:(GENNAI_UPSTREAM_[A-Z0-9_]+)")
_FILE_RE = re.compile(r"file:([A-Za-z0-9][A-Za-z0-9._-]{0,127})")
MAX_SECRET_BYTES = 16 * 1024


class SecretRefError(ValueError):
    """A secret reference is refused or cannot be resolved; ``message`` is safe to show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SecretRef:
    kind: str  # "env" or "file"
    name: str


def _format_help() -> str:
    return _(
        "シークレット参照は「env:GENNAI_UPSTREAM_名前」（名前は英大文字・数字・_）か、"
        "「file:ファイル名」（GENNAI_UPSTREAM_SECRETS_DIR 内のファイル）で指定してください。"
        "APIキーそのものや、ほかの環境変数・パスは指定できません。"
    )


def parse_secret_ref(value: str) -> SecretRef:
    """Parse a reference, refusing anything outside the namespace (no I/O).

    Security: the whole reference must match; there is no fallback to "any
    environment variable", so platform credentials are unreachable by name.
    """
    if (match := _ENV_RE.fullmatch(value)) is not None:
        name = match.group(1)
        if name in RESERVED_ENV_NAMES:
            raise SecretRefError(
                "reserved",
                _("この環境変数はプラットフォームの設定用のため、シークレット参照には使えません。")
                + " "
                + _format_help(),
            )
        return SecretRef("env", name)
    if (match := _FILE_RE.fullmatch(value)) is not None:
        name = match.group(1)
        if ".." in name:
            raise SecretRefError("outside", _format_help())
        return SecretRef("file", name)
    if value.startswith("env:"):
        raise SecretRefError(
            "outside",
            _("上流APIキー用の名前空間（GENNAI_UPSTREAM_…）の外の環境変数は参照できません。")
            + " "
            + _format_help(),
        )
    raise SecretRefError("format", _format_help())


def validate_secret_ref(value: str) -> None:
    """Form and service layer: an empty reference (no key) or a valid one; raises SecretRefError."""
    if value:
        parse_secret_ref(value)


def _secrets_dir(secrets_dir: str | None) -> str:
    if secrets_dir is None:
        from django.conf import settings

        secrets_dir = str(getattr(settings, "GENNAI_UPSTREAM_SECRETS_DIR", "") or "")
    return secrets_dir


def _read_file(name: str, secrets_dir: str) -> str:
    if not secrets_dir:
        raise SecretRefError(
            "unavailable", _("GENNAI_UPSTREAM_SECRETS_DIR が設定されていないため、file: 参照は使えません。")
        )
    try:
        base = Path(secrets_dir).resolve(strict=True)
        target = (base / name).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        raise SecretRefError("unavailable", _("シークレットファイルが見つかりません。")) from None
    # Security: symlinks are followed first, then the real path must still be inside the
    # directory (Kubernetes Secret volumes link name → ..data/name, which stays inside).
    if not target.is_relative_to(base) or target == base or not target.is_file():
        raise SecretRefError("outside", _("シークレットファイルが許可されたディレクトリの外を指しています。"))
    with target.open("rb") as handle:
        data = handle.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise SecretRefError("unavailable", _("シークレットファイルが大きすぎます。"))
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretRefError("unavailable", _("シークレットファイルを読み取れません。")) from None


def resolve_secret_ref(
    value: str, *, environ: Mapping[str, str] | None = None, secrets_dir: str | None = None
) -> str:
    """The key a reference names, at call time; ``""`` for an empty reference.

    Security: re-validates the reference (defence in depth), so a row written
    before the namespace rule, or directly in the database, still cannot make
    the platform send ``DATABASE_URL`` to an upstream. A valid reference whose
    variable or file is missing raises too: sending no key would only hide the
    misconfiguration.
    """
    if not value:
        return ""
    ref = parse_secret_ref(value)
    if ref.kind == "env":
        key = (os.environ if environ is None else environ).get(ref.name, "")
        if not key:
            raise SecretRefError("unavailable", _("参照先の環境変数が設定されていません。"))
        return key.strip()
    return _read_file(ref.name, _secrets_dir(secrets_dir))
