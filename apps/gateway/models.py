"""API keys of the OpenAI-compatible ``/v1`` API."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from apps.registry.models import Clearance
from apps.tenancy.models import Ministry

KEY_PREFIX = "gn-"
PREFIX_LENGTH = 8


class RevokeReason(models.TextChoices):
    ADMIN = "admin", _("管理者が失効")
    CREATOR_NOT_ADMIN = "creator_not_admin", _("作成者が管理者でなくなったため失効")


class ApiKey(models.Model):
    """A ministry system's credential for ``/v1`` (``Authorization: Bearer gn-…``).

    Not a :class:`~apps.tenancy.models.TenantModel`, for the same reason as
    :class:`~apps.tenancy.models.Membership`: authentication must find the key
    *before* any ministry scope exists (the key is what tells us the ministry).
    Every read outside authentication therefore filters on ``ministry``
    explicitly (:mod:`apps.gateway.selectors`), and the ``/v1`` request runs in
    ``ministry_scope(ministry_id=key.ministry_id)`` for all its tenant data.

    Security:

    * only ``sha256(full key)`` is stored; the plaintext is shown once at creation.
      A fast hash is enough because the secret has 256 bits of entropy (no
      dictionary to grind through), and it keeps the hot path cheap;
    * ``prefix`` (the first 8 characters after ``gn-``) finds the row; the hash is
      then compared in constant time;
    * ``allowed_aliases`` narrows the ministry's allowlist (empty = everything the
      ministry may use); it can never widen it;
    * ``allowed_workspace_ids`` limits ``/v1/search`` to those shared workspaces
      of the key's ministry (issue 7). Empty means "not limited": every shared
      workspace of the ministry up to ``max_level``, which is what ``/v1/search``
      allowed every key before the field existed, so older keys keep working.
      When set, the restriction is strict: the search intersects the request's
      ``workspace_ids`` with it, inside the query (a requested id outside it is
      dropped like a missing one). Ids are checked against the key's ministry at
      creation (:func:`apps.gateway.services.api_key_create`) and never change
      afterwards; it is an array of ids rather than a many-to-many on purpose:
      deleting a workspace must not shrink the list to empty, which would turn a
      restricted key into an unrestricted one. Ids are never reused by PostgreSQL;
    * ``max_level`` is the highest 機密性 the calling system may declare. A request
      without ``X-Gennai-Confidentiality`` is treated as ``max_level`` (fail-safe:
      data is never routed to a deployment cleared below what the system handles);
      the header may set any level from 1 to ``max_level`` and is refused above it;
    * every key expires (``expires_at`` is required, at most
      ``GENNAI_API_KEY_MAX_LIFETIME_DAYS`` after creation);
    * a key is its creator's delegated authority: when the creator stops being a
      ministry admin of ``ministry`` (role removed or membership gone) the key is
      revoked (``revoked_reason=creator_not_admin``), because the creator has seen
      its plaintext; handing it to another admin would leave it in a former
      admin's hands. Keys issued from the command line by a platform operator
      (``platform_issued``) have no ministry-admin creator.
    """

    ministry = models.ForeignKey(Ministry, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(_("名称"), max_length=100)
    prefix = models.CharField(max_length=PREFIX_LENGTH, unique=True)  # unique → indexed
    key_hash = models.CharField(max_length=64)
    allowed_aliases = ArrayField(models.SlugField(max_length=100), default=list, blank=True)
    # /v1/search only; empty = every shared workspace of the ministry up to max_level (see docstring).
    allowed_workspace_ids = ArrayField(models.BigIntegerField(), default=list, blank=True)
    max_level = models.PositiveSmallIntegerField(
        _("取扱可能な機密性"), choices=Clearance.choices, default=Clearance.LEVEL_1
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(_("有効期限"))
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=32, choices=RevokeReason.choices, blank=True)
    # Issued by a platform operator (management command), not by a ministry admin.
    platform_issued = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Console: "keys of my ministry, newest first".
        indexes = [models.Index(fields=["ministry", "-created_at"], name="apikey_ministry_new_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({KEY_PREFIX}{self.prefix}…)"

    @property
    def display_prefix(self) -> str:
        return f"{KEY_PREFIX}{self.prefix}"

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at > timezone.now()
