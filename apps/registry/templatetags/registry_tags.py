"""Template helpers of the registry screens (and the header's registry link)."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.translation import gettext as _

from apps.registry.permissions import NO_ACCESS, RegistryAccess, registry_access

register = template.Library()


@register.simple_tag(takes_context=True)
def registry_access_for(context: template.Context) -> RegistryAccess:
    """``{% registry_access_for as access %}``: may the current user view/edit the registry?"""
    request = context.get("request")
    if request is None or not request.user.is_authenticated:
        return NO_ACCESS
    return registry_access(request)


def _action_labels() -> dict[str, str]:
    return {
        "registry.alias.create": _("作成"),
        "registry.alias.routes": _("経路の変更"),
        "registry.alias.rollback": _("ロールバック"),
        "registry.alias.grant": _("利用許可"),
        "registry.alias.revoke": _("利用許可の取消"),
    }


@register.filter
def audit_action_label(action: str) -> str:
    return _action_labels().get(action, action)


@register.filter
def routes_summary(routes: Any) -> str:
    """``{"dep-a": 90, "dep-b": 10}`` or AliasRoute rows → ``dep-a 90 / dep-b 10``."""
    if isinstance(routes, dict):
        pairs = list(routes.items())
    else:
        pairs = [(r.deployment.name, r.weight) for r in routes]
    return " / ".join(f"{name} {weight}" for name, weight in pairs)


@register.filter
def parameter_count(value: int | None) -> str:
    """8000000000 → 8B, 135000000 → 135M (the usual way model sizes are written)."""
    if not value:
        return "—"
    for size, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if value >= size:
            number = value / size
            return f"{number:.1f}".rstrip("0").rstrip(".") + suffix
    return str(value)
