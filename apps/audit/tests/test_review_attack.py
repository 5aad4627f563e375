"""Attacks on the audit trail found in review: each test failed before its fix."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import AUDIT_EXPORT, audit_record


class _BrokenPipe(StringIO):
    """A reader that goes away after the first lines (``| head``, a full disk, Ctrl-C)."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.left = lines

    def write(self, text: str) -> int:
        if self.left <= 0:
            raise BrokenPipeError("reader gone")
        self.left -= 1
        return super().write(text)


def test_an_interrupted_command_export_is_still_audited(ministries: tuple[Any, Any]) -> None:
    """The command wrote its ``audit.export`` event only after the last line, so an export cut
    short after most of the trail had left (a pipe closed, Ctrl-C) was on no record."""
    a, _ = ministries
    for n in range(5):
        audit_record(actor=None, action=f"test.secret{n}", target_type="thing", ministry_id=a.pk)
    today = timezone.localdate().isoformat()
    out = _BrokenPipe(lines=3)
    with pytest.raises(BrokenPipeError):
        call_command("audit_export", ministry=a.code, start=today, end=today, stdout=out, stderr=StringIO())
    assert len(out.getvalue().splitlines()) == 3  # the trail left before the failure
    exports = AuditEvent.objects.filter(action=AUDIT_EXPORT, ministry=a)
    assert exports.count() == 1
    assert exports.get().data["via"] == "command"


def test_the_command_export_does_not_contain_its_own_record(ministries: tuple[Any, Any]) -> None:
    a, _ = ministries
    audit_record(actor=None, action="test.before", target_type="thing", ministry_id=a.pk)
    today = timezone.localdate().isoformat()
    out = StringIO()
    call_command("audit_export", ministry=a.code, start=today, end=today, stdout=out, stderr=StringIO())
    actions = [json.loads(line)["action"] for line in out.getvalue().splitlines()]
    assert "test.before" in actions and AUDIT_EXPORT not in actions
    record = AuditEvent.objects.get(action=AUDIT_EXPORT, ministry=a)
    assert record.data["count"] == len(actions)
