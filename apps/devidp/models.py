"""Models of the development IdP: demo identities, IdP sessions, client extras."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


def _new_sid() -> str:
    """Return a fresh IdP session id (a UUID string, like Keycloak's ``sid``)."""
    return str(uuid.uuid4())


# Managers are declared explicitly so that type checking works even where this
# app is not in INSTALLED_APPS (the main app's settings do not install it).


class DemoIdentity(models.Model):
    """Keycloak-style attributes of an IdP user (``sub``, groups, realm roles)."""

    objects: models.Manager[DemoIdentity] = models.Manager()

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="demo_identity"
    )
    subject = models.UUIDField(unique=True, default=uuid.uuid4)
    display_name = models.CharField(max_length=150, blank=True, default="")
    groups = models.JSONField(default=list, blank=True)
    realm_roles = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name = "demo identity"
        verbose_name_plural = "demo identities"

    def __str__(self) -> str:
        return f"{self.display_name or self.user} ({self.subject})"


class IdpSession(models.Model):
    """One browser login session at the IdP; its ``sid`` goes into tokens."""

    objects: models.Manager[IdpSession] = models.Manager()

    sid = models.CharField(max_length=64, unique=True, default=_new_sid)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idp_sessions")
    session_key = models.CharField(max_length=64, blank=True, default="", db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.user} sid={self.sid}"

    @property
    def is_active(self) -> bool:
        """Whether the session has not been ended by a logout."""
        return self.ended_at is None


class AuthorizationCodeSession(models.Model):
    """Links an issued authorization code to the IdP session that approved it.

    The token endpoint is called by the client's back end (without the
    browser's IdP cookie), so this is how ``sid`` reaches the ID token.
    """

    objects: models.Manager[AuthorizationCodeSession] = models.Manager()

    code = models.CharField(max_length=255, unique=True)
    idp_session = models.ForeignKey(IdpSession, on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.code} -> {self.idp_session.sid}"


class ClientBackchannel(models.Model):
    """OIDC Back-Channel Logout URI of a registered ``oidc_provider`` client."""

    objects: models.Manager[ClientBackchannel] = models.Manager()

    client_id = models.CharField(max_length=255, unique=True)
    uri = models.URLField(max_length=500)

    def __str__(self) -> str:
        return f"{self.client_id} -> {self.uri}"
