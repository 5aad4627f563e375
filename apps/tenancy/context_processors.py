"""Template context: the current ministry, role labels and ministry switcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from .selectors import membership_list_for_user


@dataclass(frozen=True)
class MinistryChoice:
    code: str
    name: str
    is_current: bool


def tenancy(request: HttpRequest) -> dict[str, Any]:
    membership = getattr(request, "membership", None)
    user = getattr(request, "user", None)
    if membership is None or user is None or not user.is_authenticated:
        return {"current_ministry": None, "current_role_labels": [], "ministry_choices": []}
    choices = [
        MinistryChoice(code=m.ministry.code, name=m.ministry.name, is_current=m.pk == membership.pk)
        for m in membership_list_for_user(user=user)
    ]
    return {
        "current_ministry": membership.ministry,
        "current_role_labels": membership.role_labels,
        "ministry_choices": choices,
    }
