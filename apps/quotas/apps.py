from django.apps import AppConfig


class QuotasConfig(AppConfig):
    name = "apps.quotas"
    label = "quotas"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from .partitions import ensure_usage_partitions_after_migrate

        # Monthly partitions of the usage ledger, two months back to twelve ahead, at
        # every migrate (as the owner role, like the grants of apps.tenancy).
        post_migrate.connect(ensure_usage_partitions_after_migrate, sender=self)
