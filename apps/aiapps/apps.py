from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AiAppsConfig(AppConfig):
    name = "apps.aiapps"
    label = "aiapps"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .builtin import seed_builtin_apps

        # Idempotent: the built-in apps follow apps/aiapps/builtin.py after every migrate.
        post_migrate.connect(seed_builtin_apps, sender=self, dispatch_uid="aiapps_seed_builtin")
