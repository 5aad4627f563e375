from django.apps import AppConfig


class GatewayConfig(AppConfig):
    """The OpenAI-compatible ``/v1`` API and its API keys (see docs/adr/0001-gateway-app.md)."""

    name = "apps.gateway"
    label = "gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import signals

        signals.connect()  # API keys follow their creator's role and their ministry (apps/gateway/signals.py)
