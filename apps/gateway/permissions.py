"""DRF permission for the key management API."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from apps.tenancy.models import Role


class IsMinistryAdmin(BasePermission):
    """Security: the request's active membership (set by the scope middleware) is a ministry admin."""

    message = "府省庁管理者の権限が必要です。 / The ministry administrator role is required."

    def has_permission(self, request: Request, view: Any) -> bool:
        membership = getattr(request, "membership", None)
        return membership is not None and membership.has_role(Role.MINISTRY_ADMIN)
