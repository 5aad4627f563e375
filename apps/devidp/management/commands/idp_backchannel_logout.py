"""``manage.py idp_backchannel_logout <username>``: end a user's IdP sessions and
send OIDC Back-Channel Logout tokens to every registered client."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.devidp.services import send_backchannel_logout


class Command(BaseCommand):
    help = "End USERNAME's IdP sessions and POST logout tokens to clients' back-channel URIs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        """Send the logout tokens and print the deliveries as JSON."""
        username: str = options["username"]
        try:
            deliveries = send_backchannel_logout(username=username)
        except get_user_model().DoesNotExist as exc:
            raise CommandError(f"unknown user: {username}") from exc
        self.stdout.write(json.dumps([d.as_dict() for d in deliveries], ensure_ascii=False, indent=2))
        if any(d.status_code is None or d.status_code >= 400 for d in deliveries):
            raise CommandError("some back-channel deliveries failed")
