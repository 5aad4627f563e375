from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "apps.tenancy"
    label = "tenancy"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from .constraints import install_same_ministry_foreign_keys
        from .grants import grant_app_role_privileges

        post_migrate.connect(grant_app_role_privileges, sender=self)
        # Foreign keys between ministry-owned rows must stay inside one ministry
        # (RLS does not apply to foreign-key checks): composite constraints.
        post_migrate.connect(install_same_ministry_foreign_keys, sender=self)
