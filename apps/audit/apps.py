from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "apps.audit"
    label = "audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import events

        events.connect()  # sign-ins and sign-outs, whatever the login path (apps/audit/events.py)
