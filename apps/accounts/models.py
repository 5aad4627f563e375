"""Users and their single-sign-on sessions."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser
from django.contrib.sessions.base_session import AbstractBaseSession
from django.db import models

from apps.tenancy.models import Role, TenantModel

from .session_keys import SessionKeyDigestField
from .token_crypto import EncryptedTextField


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


class Session(AbstractBaseSession):
    """A Django session (engine :mod:`apps.accounts.session_store`), keyed by the digest of its key.

    Security: ``session_key`` holds only the digest of the browser's session
    cookie (:mod:`apps.accounts.session_keys`), so a database backup or a
    read-only SQL foothold yields no cookie that names a live session.
    Replaces ``django_session``, whose primary key was the cookie value itself.
    """

    session_key = SessionKeyDigestField(max_length=40, primary_key=True)
    # Declared again after session_key to keep Django's field order, on which
    # ``Session.objects.save(session_key, session_dict, expire_date)`` relies.
    session_data = models.TextField()
    expire_date = models.DateTimeField(db_index=True)

    @classmethod
    def get_session_store_class(cls) -> Any:
        from .session_store import SessionStore

        return SessionStore


class OIDCSession(models.Model):
    """Links an IdP session (``sid``) to our Django session, and holds its tokens.

    Keycloak's logout token names the ``sid`` (and ``sub``); we delete exactly
    the Django sessions created from that IdP session.

    The refresh and access tokens live here, server-side, rather than in the
    session dictionary: the claims re-check (:mod:`apps.accounts.recheck`)
    rotates them while other requests of the same session may be saving their
    own copy of the session, which would otherwise write an old, already used
    refresh token back. They are never sent to the browser, and are stored
    encrypted with a key derived from ``SECRET_KEY`` (:mod:`apps.accounts.token_crypto`):
    a token that no longer decrypts reads as ``""``, and the re-check then ends
    the session. ``session_key``, like the session table's, holds only a digest.
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="oidc_sessions")
    sid = models.CharField(max_length=255, blank=True)
    #: The Django session's key, stored as its digest (:mod:`apps.accounts.session_keys`).
    session_key = SessionKeyDigestField(max_length=40, unique=True)
    refresh_token = EncryptedTextField(blank=True, default="")
    access_token = EncryptedTextField(blank=True, default="")
    #: Last time the IdP confirmed the user's claims (login or refresh).
    claims_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # Back-channel logout looks sessions up by sid.
        indexes = [models.Index(fields=["sid"], name="oidcsession_sid_idx")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.sid}"


class LocalGrantPolicy(TenantModel):
    """One ministry's override of the platform's local-grant policy (``GENNAI_LOCAL_ROLE_GRANTS``).

    Set by the platform team only (the platform console's local-grant page, for
    platform admins, or ``manage.py local_grant_policy``; both audited), never
    by the ministry's own admins: otherwise the policy would not limit
    them. Without a row the platform setting applies (default: off).
    """

    enabled = models.BooleanField()
    #: Whether ``ministry_admin`` may be granted locally (never without this; platform roles never).
    allow_ministry_admin = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["ministry"], name="localgrantpolicy_ministry_uniq")]

    def __str__(self) -> str:
        return f"{self.ministry_id}:{'on' if self.enabled else 'off'}"


class LocalRoleGrant(TenantModel):
    """A ministry role granted in the console to a member for a period (a *local* grant).

    The member's effective roles are their SSO roles (``Membership.roles``) plus
    the unexpired local grants their ministry's policy allows, applied on each
    request (:func:`apps.accounts.local_roles.membership_apply_local_grants`).
    A grant never outlives the SSO membership it extends (no membership, no
    roles), and ``expires_at`` is mandatory. Written only by
    :func:`apps.accounts.services.local_role_grant` / ``local_role_revoke``
    (audited).
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+", db_index=False)
    role = models.CharField(max_length=32, choices=Role.choices)
    expires_at = models.DateTimeField()
    granted_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["expires_at", "id"]
        constraints = [
            # One grant per member and role; its unique index also serves the per-request
            # lookup "the grants of (ministry, user)".
            models.UniqueConstraint(fields=["ministry", "user", "role"], name="localrolegrant_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.ministry_id}:{self.role} until {self.expires_at:%Y-%m-%d}"
