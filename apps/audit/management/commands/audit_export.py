"""``manage.py audit_export --ministry <code> --start YYYY-MM-DD --end YYYY-MM-DD``: one
ministry's audit trail for a period as JSON Lines (stdout, or ``--output FILE``)."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.models import AuditEvent
from apps.audit.selectors import AuditFilter, audit_event_export, audit_jsonl_lines
from apps.audit.services import audit_export_record
from apps.tenancy.models import Ministry


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"not a date (YYYY-MM-DD): {value!r}") from exc


class Command(BaseCommand):
    help = (
        "Export one ministry's audit events of a period (dates in Asia/Tokyo, end inclusive) as JSON Lines. "
        "The export itself is audited."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ministry", required=True, help="ministry code, e.g. digital")
        parser.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
        parser.add_argument("--end", required=True, help="last day (inclusive), YYYY-MM-DD")
        parser.add_argument("--output", help="write to this file instead of standard output")

    def handle(self, *args: Any, **options: Any) -> None:
        ministry = Ministry.objects.filter(code=options["ministry"]).first()
        if ministry is None:
            raise CommandError(f"unknown ministry: {options['ministry']!r}")
        start, end = _day(options["start"]), _day(options["end"])
        if end < start:
            raise CommandError("--end is before --start")
        events = audit_event_export(ministry_id=ministry.pk, filters=AuditFilter(start=start, end=end))
        # Security: the export is on the chain *before* any line leaves, so an export cut short
        # (a closed pipe, a full disk, Ctrl-C) after most of the trail was written is recorded
        # too. The lines stop at the last event before that record: the export does not
        # contain its own record, and ``count`` is exactly what a complete run writes.
        last_id = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        events = events.filter(id__lte=last_id)
        total = events.count()
        audit_export_record(
            actor=None, ministry_id=ministry.pk, start=start, end=end, via="command", filters={"count": total}
        )
        count = 0
        out = open(options["output"], "w", encoding="utf-8") if options["output"] else None

        def write(line: str) -> None:
            if out is not None:
                out.write(line)
            else:
                self.stdout.write(line, ending="")

        try:
            for line in audit_jsonl_lines(events.iterator(chunk_size=2000)):
                write(line)
                count += 1
        finally:
            if out is not None:
                out.close()
        self.stderr.write(f"audit_export: {count} events of {ministry.code} from {start} to {end}")
