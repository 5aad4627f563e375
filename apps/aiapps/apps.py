from django.apps import AppConfig


class AiAppsConfig(AppConfig):
    name = "apps.aiapps"
    label = "aiapps"
    default_auto_field = "django.db.models.BigAutoField"
