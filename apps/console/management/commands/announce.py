"""Post an announcement to one ministry: ``manage.py announce --ministry digital --title … --body …``."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from apps.console.services import announcement_create
from apps.tenancy.commands import TenantCommand
from apps.tenancy.models import Ministry


class Command(TenantCommand):
    help = "Post an announcement to the staff of one ministry."

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--title", required=True)
        parser.add_argument("--body", required=True)

    def handle_in_scope(self, ministry: Ministry, *args: Any, **options: Any) -> None:
        announcement = announcement_create(
            actor=None, ministry=ministry, title=options["title"], body=options["body"]
        )
        self.stdout.write(f"posted announcement {announcement.pk} to {ministry.code}")
