"""``manage.py audit_verify``: check the audit log's hash chain end to end."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.audit.services import audit_verify


class Command(BaseCommand):
    help = "Verify the hash chain of the audit log; exit with status 1 at the first tampered event."

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_verify()
        if not report.intact:
            # CommandError: a non-zero exit status, so a cron job or CI step fails loudly.
            raise CommandError(
                f"audit chain BROKEN at event id={report.first_bad_id}: {report.reason} "
                f"({report.checked} events before it verified)"
            )
        self.stdout.write(f"audit chain intact: {report.checked} events verified")
