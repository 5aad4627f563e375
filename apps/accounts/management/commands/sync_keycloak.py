"""Sync realm roles and ministry groups to Keycloak: ``manage.py sync_keycloak [--dry-run] [--prune]``."""

from __future__ import annotations

import ipaddress
from argparse import ArgumentParser
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.accounts.keycloak_sync import KeycloakSyncError, keycloak_admin_from_settings, keycloak_sync
from apps.tenancy.models import Ministry


def _is_loopback(host: str) -> bool:
    """Security: plain HTTP is accepted only to this host.

    The command sends the service account's secret (or a master-realm admin's
    password) with its first call; whoever reads it can rewrite the realm's
    clients and group memberships, i.e. make anyone admin of any ministry.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Command(BaseCommand):
    help = (
        "Create Keycloak realm roles for every platform role and a /ministries/<code> group for every "
        "active ministry (idempotent). Groups without an active ministry are reported; --prune deletes them."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Report what would change; write nothing.")
        parser.add_argument(
            "--prune",
            action="store_true",
            help="Delete /ministries/<code> groups that have no active ministry (members lose access).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        url = str(settings.KEYCLOAK_URL).strip()
        if not url:
            raise CommandError(
                "KEYCLOAK_URL が設定されていません(例: https://sso.example.go.jp)。\n"
                "KEYCLOAK_URL is not set (e.g. https://sso.example.go.jp); see infra/keycloak/README.md."
            )
        parts = urlparse(url)
        if parts.scheme not in ("http", "https"):
            raise CommandError(
                f"KEYCLOAK_URL は http(s):// で始まる URL にしてください: {url!r}\n"
                f"KEYCLOAK_URL must be an http(s):// URL: {url!r}"
            )
        if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
            raise CommandError(
                f"KEYCLOAK_URL は https:// にしてください(平文の http は自ホストだけ): {url!r}\n"
                f"KEYCLOAK_URL must be https:// (plain http only for this host): {url!r}. The admin "
                "credentials would otherwise cross the network in clear."
            )
        admin = keycloak_admin_from_settings()
        try:
            report = keycloak_sync(
                admin=admin,
                ministries=Ministry.objects.all(),
                dry_run=options["dry_run"],
                prune=options["prune"],
            )
        except KeycloakSyncError as exc:
            raise CommandError(
                f"{exc.message_ja}\n{exc.message_en}\n(KEYCLOAK_URL={url}, realm={settings.KEYCLOAK_REALM})"
            ) from exc
        for line in report.lines():
            self.stdout.write(line)
        if report.orphaned_groups and not options["prune"]:
            self.stderr.write(
                self.style.WARNING(
                    "有効な府省庁のないグループがあります(削除していません): "
                    + ", ".join(report.orphaned_groups)
                )
            )
        if not report.changed:
            summary = "変更なし / no changes"
        elif report.dry_run:
            summary = "ドライラン: 上記の変更は書き込んでいません / dry run: nothing was written"
        else:
            summary = "同期しました / synced"
        self.stdout.write(self.style.SUCCESS(summary))
