"""``flush`` as the owner role: the app role has no TRUNCATE privilege."""

from typing import Any

from django.core.management.commands.flush import Command as DjangoFlushCommand

from apps.tenancy.db import owner_mode


class Command(DjangoFlushCommand):
    def handle(self, **options: Any) -> None:
        with owner_mode():
            super().handle(**options)
