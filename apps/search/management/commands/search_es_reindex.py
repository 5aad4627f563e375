"""Rebuild a ministry's Elasticsearch index under the current template and swap its alias (docs/search.md)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.search.elastic import ElasticsearchBackend
from apps.tenancy.models import Ministry


class Command(BaseCommand):
    help = "Reindex gennai-<ministry>-chunks into a new version and swap the alias atomically."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("ministry", nargs="+", help="ministry codes, or 'all'")

    def handle(self, *args: Any, **options: Any) -> None:
        codes: list[str] = options["ministry"]
        ministries = Ministry.objects.all() if codes == ["all"] else Ministry.objects.filter(code__in=codes)
        found = list(ministries.order_by("code"))
        missing = set(codes) - {m.code for m in found} - {"all"}
        if missing:
            raise CommandError(f"unknown ministries: {', '.join(sorted(missing))}")
        backend = ElasticsearchBackend()
        for ministry in found:
            target = backend.reindex(ministry_id=ministry.pk)
            self.stdout.write(f"{ministry.code}: alias now on {target}")
