"""Create the usage ledger's monthly partitions ahead of time (ops, as the owner role).

``manage.py usage_partitions --months 24 [--start 2027-01]``

Every ``migrate`` already creates two months back to twelve ahead; this is for
longer horizons or backfills. Run it with the migration login (creating a
partition is DDL, which the application role may not do). Rows that landed in
the DEFAULT partition for a month created here are moved into it.
"""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.quotas.partitions import DEFAULT_PARTITION, ensure_usage_partitions, usage_partitions
from apps.tenancy.db import owner_mode


def _month(value: str) -> date:
    return date.fromisoformat(f"{value}-01")


class Command(BaseCommand):
    help = "Create monthly partitions of quotas_usagerecord (idempotent)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--months", type=int, default=12, help="how many months (default 12)")
        parser.add_argument("--start", type=_month, help="first month, YYYY-MM (default: this month)")

    def handle(self, *args: Any, **options: Any) -> None:
        months = options["months"]
        if not 1 <= months <= 120:
            raise CommandError("--months must be between 1 and 120")
        start = options["start"] or timezone.localdate()
        with owner_mode():
            created = ensure_usage_partitions(start=start, months=months)
            partitions = usage_partitions()
        if not partitions:
            raise CommandError("quotas_usagerecord is not partitioned (run migrate first)")
        for name in created:
            self.stdout.write(f"created {name}")
        names = [name for name, _bound in partitions if name != DEFAULT_PARTITION]
        self.stdout.write(f"{len(names)} monthly partitions: {names[0]} … {names[-1]}" if names else "none")
