"""Ministries, memberships and the base class of all ministry-owned data."""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from .managers import TenantManager
from .scope import ScopeError, current_ministry_id


class Role(models.TextChoices):
    """Roles a membership can hold (DESIGN invariant 9: roles are per ministry).

    * per ministry, only from claims scoped to that ministry (Keycloak group
      ``/ministries/<code>`` and its subgroups, or client roles
      ``<code>:<role>``): ``staff``, ``ministry_admin``, ``ministry_auditor``;
    * platform-wide, from realm roles: ``platform_admin``, ``auditor`` (read-only
      across ministries) and ``procurement_officer`` (the registry is platform
      data), which may also be granted through ``/ministries/<code>/procurement``.

    The mapping lives in :mod:`apps.accounts.claims`.
    """

    STAFF = "staff", _("職員")
    MINISTRY_ADMIN = "ministry_admin", _("府省庁管理者")
    MINISTRY_AUDITOR = "ministry_auditor", _("府省庁監査担当")
    PROCUREMENT_OFFICER = "procurement_officer", _("調達担当")
    PLATFORM_ADMIN = "platform_admin", _("プラットフォーム管理者")
    AUDITOR = "auditor", _("監査担当")


class Ministry(models.Model):
    """A ministry or agency (府省庁): the unit of data separation.

    ``code`` is what Keycloak groups use: ``/ministries/<code>``.
    """

    code = models.SlugField(max_length=32, unique=True)
    name_ja = models.CharField(max_length=100)
    name_en = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        verbose_name = _("府省庁")

    def __str__(self) -> str:
        return f"{self.name_ja} ({self.code})"

    @property
    def name(self) -> str:
        """Name in the active UI language."""
        return self.name_en if (get_language() or "ja").startswith("en") else self.name_ja


class Membership(models.Model):
    """A user's roles within one ministry.

    Created, changed and removed only from identity-provider claims
    (:func:`apps.accounts.services.user_sync_from_claims`), at login and again
    whenever the short-lived claims cache of the session expires
    (:class:`apps.accounts.middleware.ClaimsRecheckMiddleware`): a user who
    loses a Keycloak group loses the membership or role on a following request,
    not only at the next login. ``roles`` holds the ministry's own roles plus the
    user's platform-wide roles; a ministry role here never comes from a realm
    role or from another ministry's group. Not a TenantModel: the middleware
    must read it *before* a ministry scope exists.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    ministry = models.ForeignKey(Ministry, on_delete=models.PROTECT, related_name="memberships")
    roles = ArrayField(models.CharField(max_length=32, choices=Role.choices), default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "ministry"], name="membership_user_ministry_uniq")
        ]
        # "members of ministry X" for the admin console.
        indexes = [models.Index(fields=["ministry", "user"], name="membership_ministry_user_idx")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.ministry_id}:{','.join(self.roles)}"

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def role_labels(self) -> list[str]:
        labels = dict(Role.choices)
        return [str(labels[r]) for r in self.roles if r in labels]


class TenantModel(models.Model):
    """Base class for every row owned by a ministry.

    Invariants (checked by ``tests/test_tenancy_sweep.py`` for every subclass):

    * ``ministry`` is a non-null FK and leads every index;
    * the default manager refuses queries without an active scope and filters
      on the scope's ministry;
    * the table has ``ENABLE``/``FORCE ROW LEVEL SECURITY`` and the
      ``ministry_isolation`` policy (add :class:`apps.tenancy.operations.EnableRLS`
      to the model's migration);
    * saving a row of another ministry than the active scope raises.
    """

    ministry = models.ForeignKey(Ministry, on_delete=models.PROTECT, related_name="+")

    objects: ClassVar[TenantManager[Any]] = TenantManager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        scope = current_ministry_id()
        if scope is not None:
            if self.ministry_id is None:
                self.ministry_id = scope
            elif self.ministry_id != scope:
                raise ScopeError("cannot save a row of another ministry than the active scope")
        super().save(*args, **kwargs)


class CacheVersion(models.Model):
    """The invalidation version of one process-local cache (platform level, no ministry).

    Written only by :func:`apps.tenancy.versions.bump_version`, in the same
    transaction as the change it announces; read by each process at most once a
    second (see :mod:`apps.tenancy.versions` and docs/adr/0005). It lives in
    PostgreSQL, not Redis, so a cache flush or failover cannot roll it back.
    """

    name = models.CharField(max_length=64, primary_key=True)
    version = models.BigIntegerField()
    changed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}={self.version}"


class TeamSource(models.TextChoices):
    SSO = "sso", _("SSO（IdP のグループ）")
    LOCAL = "local", _("ローカル設定")


class Team(TenantModel):
    """A team (課・室) inside one ministry: the optional level between ministry and user.

    Teams come from identity-provider subgroups ``/ministries/<code>/teams/<slug>``
    (``source = sso``, synchronised at login by :mod:`apps.accounts.claims`), or
    are created locally by a ministry admin where policy allows. Budgets and
    limits (:mod:`apps.quotas.budget_models`) may be set per team.
    """

    code = models.SlugField(max_length=64)
    name = models.CharField(_("チーム名"), max_length=200)
    source = models.CharField(max_length=8, choices=TeamSource.choices, default=TeamSource.SSO)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]
        constraints = [models.UniqueConstraint(fields=["ministry", "code"], name="team_ministry_code_uniq")]

    def __str__(self) -> str:
        return self.name or self.code


class TeamMembership(TenantModel):
    """A user's membership of one team of their ministry (a user may be in several)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships"
    )
    source = models.CharField(max_length=8, choices=TeamSource.choices, default=TeamSource.SSO)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["ministry", "team", "user"], name="teammembership_uniq")
        ]
        # Admission: "teams of this user in this ministry".
        indexes = [models.Index(fields=["ministry", "user"], name="teammembership_user_idx")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.team_id}"
