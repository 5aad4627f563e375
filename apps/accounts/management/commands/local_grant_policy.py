"""``manage.py local_grant_policy``: the platform team sets one ministry's local-grant policy.

``manage.py local_grant_policy --ministry digital --enable [--allow-ministry-admin]``
``manage.py local_grant_policy --ministry digital --disable``
``manage.py local_grant_policy --ministry digital --platform-default``   (remove the override)

Audited (``membership.local_grant_policy``, actor ``system``). Grants the new
policy no longer allows are revoked at once. Platform admins can do the same in
the console (プラットフォーム → 府省庁 → ローカル付与,
``console:platform_local_grants``), audited with their name.
See docs/admin.md, "Local role grants".
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.local_roles import grant_policy
from apps.accounts.services import local_grant_policy_set
from apps.tenancy.models import Ministry
from apps.tenancy.scope import ministry_scope


class Command(BaseCommand):
    help = "Enable, disable or reset a ministry's policy for local role grants (platform team only)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--ministry", required=True, help="ministry code")
        mode = parser.add_mutually_exclusive_group(required=True)
        mode.add_argument("--enable", action="store_true")
        mode.add_argument("--disable", action="store_true")
        mode.add_argument("--platform-default", action="store_true", help="remove the ministry's override")
        parser.add_argument(
            "--allow-ministry-admin", action="store_true", help="ministry_admin may be granted"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        ministry = Ministry.objects.filter(code=options["ministry"]).first()
        if ministry is None:
            raise CommandError(f"unknown ministry {options['ministry']!r}")
        enabled = True if options["enable"] else False if options["disable"] else None
        if options["allow_ministry_admin"] and not enabled:
            raise CommandError("--allow-ministry-admin needs --enable")
        change = local_grant_policy_set(
            ministry=ministry,
            enabled=enabled,
            allow_ministry_admin=bool(options["allow_ministry_admin"]),
            actor=None,
        )
        with ministry_scope(ministry_id=ministry.pk):
            roles = grant_policy(ministry_id=ministry.pk).grantable_roles()
        self.stdout.write(f"{ministry.code}: grantable roles: {', '.join(roles) or 'none'}")
        if change.revoked:
            self.stdout.write(f"{ministry.code}: revoked {change.revoked} grant(s) no longer allowed")
