"""App configuration for the development IdP."""

from __future__ import annotations

from django.apps import AppConfig


class DevIdpConfig(AppConfig):
    """Keycloak look-alike OpenID provider used for local runs and tests."""

    name = "apps.devidp"
    label = "devidp"
    verbose_name = "Development IdP"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Connect login/logout signal receivers that track IdP sessions (``sid``)."""
        from . import services  # noqa: F401  (registers signal receivers)
