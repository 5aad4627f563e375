"""Create an API key and print it once.

``manage.py api_key_create --ministry digital --name 人事システム [--alias standard-chat] [--max-level 2]
[--expires-days 30]``

Every key expires: without ``--expires-days`` the key gets the maximum lifetime
(``GENNAI_API_KEY_MAX_LIFETIME_DAYS``, default 90). A key made here is
*platform-issued*: it belongs to no ministry admin, so no admin's role change revokes it.
"""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.utils import timezone

from apps.gateway.services import api_key_create, max_lifetime
from apps.tenancy.commands import TenantCommand
from apps.tenancy.models import Ministry


class Command(TenantCommand):
    help = "Create an API key for the OpenAI-compatible /v1 API. The key is printed once."

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--name", required=True, help="what the key is for, e.g. the calling system")
        parser.add_argument(
            "--alias", action="append", default=[], help="restrict to this model alias (repeatable)"
        )
        parser.add_argument("--max-level", type=int, choices=[1, 2, 3], default=1, help="highest 機密性")
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help="expire after N days (default and maximum: GENNAI_API_KEY_MAX_LIFETIME_DAYS)",
        )

    def handle_in_scope(self, ministry: Ministry, *args: Any, **options: Any) -> None:
        days = options["expires_days"]
        if days is None:
            days = max_lifetime().days
        try:
            key, plaintext = api_key_create(
                actor=None,
                ministry=ministry,
                name=options["name"],
                aliases=options["alias"],
                max_level=options["max_level"],
                expires_at=timezone.now() + timedelta(days=days),
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stderr.write(f"created API key {key.display_prefix}… ({key.name}) for {ministry.code}; ")
        self.stderr.write("it is shown only now: store it safely.")
        self.stdout.write(plaintext)
