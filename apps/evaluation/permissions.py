"""Who may see and change procurement evaluation (suites, runs, reports, promotions).

Evaluation data is platform data like the registry it evaluates, so access
follows the registry's roles (:mod:`apps.registry.permissions`): procurement
officers and platform admins change it, auditors read it, everyone else gets
nothing. The arena is different: any staff member uses it inside their own
ministry (:mod:`.arena`).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.utils.translation import gettext as _

from apps.registry.permissions import EDIT_ROLES, access_for_user
from apps.tenancy.models import Membership, Ministry


def require_edit(actor: Any) -> None:
    """Security: every write of evaluation data checks the role again here, not only in the view."""
    if not access_for_user(actor).can_edit:
        raise PermissionDenied(
            _("評価を変更する権限がありません（調達担当またはプラットフォーム管理者のみ）。")
        )


def require_view(actor: Any) -> None:
    if not access_for_user(actor).can_view:
        raise PermissionDenied(_("評価を閲覧する権限がありません。"))


def charged_ministry_for(actor: Any) -> Ministry:
    """The ministry whose usage ledger an officer's evaluation calls are written to.

    The first active-ministry membership in which the actor holds an editing
    role (lowest ministry id, so the choice is stable): the ministry that
    employs the officer pays for their evaluation calls.
    """
    membership = (
        Membership.objects.filter(user=actor, ministry__active=True)
        .select_related("ministry")
        .order_by("ministry_id")
    )
    for row in membership:
        if set(row.roles) & EDIT_ROLES:
            return row.ministry
    raise PermissionDenied(_("評価を実行する権限がありません。"))
