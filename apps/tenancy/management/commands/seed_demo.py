"""Seed the demo ministries and a few announcements (idempotent).

Users are not created here: they appear at their first SSO login, from the
identity provider's claims, exactly as in production.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.console.models import Announcement
from apps.console.services import announcement_create
from apps.devidp.demo_users import MINISTRIES
from apps.tenancy.models import Ministry
from apps.tenancy.scope import ministry_scope

ANNOUNCEMENTS = {
    "digital": [
        ("源内の試行利用を開始しました", "デジタル庁の職員は本日から生成AI基盤「源内」を利用できます。"),
        ("機密性2情報の取扱いについて", "機密性2以上の情報は、許可された国内モデルでのみ扱ってください。"),
    ],
    "soumu": [
        ("総務省での利用開始のお知らせ", "総務省の職員向けに源内の利用を開始しました。"),
    ],
}


class Command(BaseCommand):
    help = "Create the demo ministries and announcements if missing."

    def handle(self, *args: Any, **options: Any) -> None:
        for data in MINISTRIES:
            ministry, created = Ministry.objects.update_or_create(
                code=data["code"], defaults={"name_ja": data["name_ja"], "name_en": data["name_en"]}
            )
            with ministry_scope(ministry_id=ministry.pk):
                existing = set(Announcement.objects.values_list("title", flat=True))
                for title, body in ANNOUNCEMENTS.get(ministry.code, []):
                    if title not in existing:
                        announcement_create(actor=None, ministry=ministry, title=title, body=body)
            self.stdout.write(f"{'created' if created else 'kept'} ministry {ministry}")
