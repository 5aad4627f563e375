"""System checks of the registry's settings (run by ``manage.py check`` and at start-up)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from .egress import EgressPolicy


@register()
def check_upstream_allowlist(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """A malformed ``GENNAI_UPSTREAM_ALLOWED_HOSTS`` entry stops start-up, not the first request."""
    try:
        EgressPolicy.parse(getattr(settings, "GENNAI_UPSTREAM_ALLOWED_HOSTS", ()))
    except ValueError as exc:
        return [
            Error(
                f"GENNAI_UPSTREAM_ALLOWED_HOSTS: {exc}",
                hint="Use host names, *.suffix wildcards (two labels at least) or CIDRs, comma-separated.",
                id="registry.E001",
            )
        ]
    return []
