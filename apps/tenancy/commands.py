"""Base class for management commands that work on one ministry's data."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from .models import Ministry
from .scope import ministry_scope


class TenantCommand(BaseCommand):
    """A command that runs in the scope of ``--ministry <code>``."""

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--ministry", required=True, help="ministry code, e.g. digital")

    def handle(self, *args: Any, **options: Any) -> None:
        code = options.pop("ministry")
        ministry = Ministry.objects.filter(code=code, active=True).first()
        if ministry is None:
            raise CommandError(f"unknown or inactive ministry code: {code!r}")
        with ministry_scope(ministry_id=ministry.pk):
            self.handle_in_scope(ministry, *args, **options)

    def handle_in_scope(self, ministry: Ministry, *args: Any, **options: Any) -> None:
        """Do the command's work; the scope of ``ministry`` is active."""
        raise NotImplementedError
