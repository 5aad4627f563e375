"""Template filters of the chat app."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

from apps.chat.markdown import render_markdown

register = template.Library()


@register.filter(name="chat_markdown")
def chat_markdown(text: str) -> SafeString:
    """Model output as sanitised HTML (see :mod:`apps.chat.markdown`)."""
    return mark_safe(render_markdown(text or ""))  # noqa: S308 - sanitised by nh3 with an allowlist


@register.filter(name="seconds")
def seconds(milliseconds: int | None) -> str:
    """``1234`` → ``"1.23"`` (for "合計 1.23 秒")."""
    if milliseconds is None:
        return ""
    return f"{milliseconds / 1000:.2f}"


@register.filter(name="estimated_mark")
def estimated_mark(estimated: bool) -> str:
    """``"（推定）"`` after a token count the platform estimated (the upstream sent none)."""
    return _("（推定）") if estimated else ""


@register.filter(name="thousands")
def thousands(value: Any) -> str:
    """12345 → "12,345" (whole numbers; the sidebar's budget meter)."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return ""


@register.filter(name="notice_text")
def notice_text(notice: Any) -> str:
    """A notification's text in the active language (rows keep only facts)."""
    from apps.quotas.alerts import notification_text

    return notification_text(notice.kind, notice.data)
