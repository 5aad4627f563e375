"""``manage.py idp_seed``: idempotently seed the dev IdP (users, RSA key, client).

Example (settings ``gennai.settings.idp``)::

    manage.py idp_seed --client-id gennai-web --client-secret s3cret \\
        --redirect-uri http://127.0.0.1:8000/accounts/callback/ \\
        --post-logout-redirect-uri http://127.0.0.1:8000/ \\
        --backchannel-logout-uri http://127.0.0.1:8000/accounts/backchannel-logout/
"""

from __future__ import annotations

import uuid
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from oidc_provider.models import Client, ResponseType, RSAKey

from apps.devidp.demo_users import (
    DEMO_PASSWORD,
    DEMO_USERS,
    demo_groups,
    demo_realm_roles,
    demo_subject,
)
from apps.devidp.models import ClientBackchannel, DemoIdentity


def split_name(name: str) -> tuple[str, str]:
    """Split a Japanese display name "姓 名" into ``(family_name, given_name)``."""
    family, _, given = name.partition(" ")
    return (family, given) if given else ("", name)


def generate_rsa_pem() -> str:
    """Return a new 2048-bit RSA private key as PKCS#8 PEM (as ``creatersakey`` does)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode("ascii")


class Command(BaseCommand):
    help = "Create or update the dev IdP's demo users, signing key and OIDC client."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--client-id", default="gennai-web")
        parser.add_argument("--client-secret", required=True)
        parser.add_argument("--client-name", default="Gennai Web")
        parser.add_argument(
            "--redirect-uri", action="append", required=True, dest="redirect_uris",
            help="Allowed redirect URI (repeatable); replaces the registered ones.",
        )  # fmt: skip
        parser.add_argument(
            "--post-logout-redirect-uri", action="append", default=[],
            dest="post_logout_redirect_uris", help="Allowed post-logout redirect URI (repeatable).",
        )  # fmt: skip
        parser.add_argument(
            "--backchannel-logout-uri", default=None,
            help="Client's OIDC Back-Channel Logout URI (omit to leave unchanged, '' to remove).",
        )  # fmt: skip

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        """Seed everything; safe to run repeatedly."""
        self.seed_users()
        self.ensure_rsa_key()
        self.seed_client(options)

    def seed_users(self) -> None:
        """Create/update the demo users from ``demo_users.py`` and their identities."""
        user_model = get_user_model()
        for entry in DEMO_USERS:
            username, name = str(entry["username"]), str(entry["name"])
            family, given = split_name(name)
            user, created = user_model.objects.get_or_create(username=username)
            user.first_name, user.last_name = given, family
            user.email = str(entry["email"])
            user.is_active = True
            if created or not user.check_password(DEMO_PASSWORD):
                user.set_password(DEMO_PASSWORD)
            user.save()
            subject = uuid.UUID(demo_subject(username))
            DemoIdentity.objects.exclude(user=user).filter(subject=subject).delete()
            DemoIdentity.objects.update_or_create(
                user=user,
                defaults={
                    "subject": subject,
                    "display_name": name,
                    "groups": demo_groups(dict(entry["roles"]), dict(entry.get("teams", {}))),
                    "realm_roles": demo_realm_roles(dict(entry["roles"])),
                },
            )
            self.stdout.write(f"{'created' if created else 'updated'} user {username} (sub {subject})")

    def ensure_rsa_key(self) -> None:
        """Create the signing key if there is none."""
        if RSAKey.objects.exists():
            self.stdout.write(f"RSA key present (kid {RSAKey.objects.order_by('id').first()})")
            return
        rsakey = RSAKey.objects.create(key=generate_rsa_pem())
        self.stdout.write(f"created RSA key (kid {rsakey.kid})")

    def seed_client(self, options: dict[str, Any]) -> None:
        """Create/update the confidential code-flow client and its back-channel URI."""
        client_id: str = options["client_id"]
        client, created = Client.objects.get_or_create(client_id=client_id)
        client.name = options["client_name"]
        client.client_type = "confidential"
        client.client_secret = options["client_secret"]
        client.jwt_alg = "RS256"
        client.require_consent = False
        client.reuse_consent = True
        client.redirect_uris = list(dict.fromkeys(options["redirect_uris"]))
        client.post_logout_redirect_uris = list(dict.fromkeys(options["post_logout_redirect_uris"]))
        client.scope = ["openid", "profile", "email"]
        client.save()
        client.response_types.set([ResponseType.objects.get(value="code")])

        backchannel_uri = options["backchannel_logout_uri"]
        if backchannel_uri:
            ClientBackchannel.objects.update_or_create(client_id=client_id, defaults={"uri": backchannel_uri})
        elif backchannel_uri == "":
            ClientBackchannel.objects.filter(client_id=client_id).delete()
        self.stdout.write(f"{'created' if created else 'updated'} client {client_id}")
