"""Backfill daily usage rollups.

``manage.py usage_rollup --start 2026-11-01 --end 2026-11-30 [--ministry digital]``
"""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.quotas.rollups import usage_rollup_range
from apps.tenancy.models import Ministry


class Command(BaseCommand):
    help = "Recompute UsageDaily from UsageRecord for a range of days (idempotent)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--start", required=True, type=date.fromisoformat, help="first day (YYYY-MM-DD)")
        parser.add_argument("--end", required=True, type=date.fromisoformat, help="last day, inclusive")
        parser.add_argument("--ministry", help="ministry code (default: every ministry)")

    def handle(self, *args: Any, **options: Any) -> None:
        first, last = options["start"], options["end"]
        if last < first:
            raise CommandError("--end is before --start")
        ministries = Ministry.objects.order_by("id")
        if options["ministry"]:
            ministries = ministries.filter(code=options["ministry"])
            if not ministries.exists():
                raise CommandError(f"no ministry {options['ministry']!r}")
        for ministry in ministries:
            # Each ministry's rows are rolled up inside that ministry's own scope (RLS).
            results = usage_rollup_range(first=first, last=last, ministry_ids=[ministry.pk])
            upserted = sum(r.upserted for r in results)
            deleted = sum(r.deleted for r in results)
            self.stdout.write(
                f"{ministry.code}: {first}..{last}: {upserted} rows upserted, {deleted} removed"
            )
