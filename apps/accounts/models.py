"""Users and their single-sign-on sessions."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person signed in through Keycloak.

    ``subject`` is the identity provider's ``sub`` and the only key used to match
    a login to a user; usernames and e-mails may change upstream. Users have no
    usable local password: authentication is always OIDC.
    """

    subject = models.CharField(max_length=255, unique=True, null=True, blank=True)
    display_name = models.CharField(max_length=150, blank=True)

    def __str__(self) -> str:
        return self.display_name or self.username


class OIDCSession(models.Model):
    """Links an IdP session (``sid``) to our Django session, and holds its tokens.

    Keycloak's logout token names the ``sid`` (and ``sub``); we delete exactly
    the Django sessions created from that IdP session.

    The refresh and access tokens live here, server-side, rather than in the
    session dictionary: the claims re-check (:mod:`apps.accounts.recheck`)
    rotates them while other requests of the same session may be saving their
    own copy of the session, which would otherwise write an old, already used
    refresh token back. They are never sent to the browser.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="oidc_sessions")
    sid = models.CharField(max_length=255, blank=True)
    session_key = models.CharField(max_length=40, unique=True)
    refresh_token = models.TextField(blank=True, default="")
    access_token = models.TextField(blank=True, default="")
    #: Last time the IdP confirmed the user's claims (login or refresh).
    claims_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # Back-channel logout looks sessions up by sid.
        indexes = [models.Index(fields=["sid"], name="oidcsession_sid_idx")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.sid}"
