"""``migrate`` as the owner role, so tables belong to the owner, not the app."""

from typing import Any

from django.core.management.commands.migrate import Command as DjangoMigrateCommand

from apps.tenancy.db import owner_mode


class Command(DjangoMigrateCommand):
    def handle(self, *args: Any, **options: Any) -> None:
        with owner_mode():
            super().handle(*args, **options)
