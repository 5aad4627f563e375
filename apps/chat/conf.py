"""Chat settings, read through helpers so a per-ministry setting can replace them later."""

from __future__ import annotations

from django.conf import settings

MIN_LEVEL = 1
MAX_LEVEL = 3


def default_confidentiality() -> int:
    """機密性 level new conversations start at (``GENNAI_DEFAULT_CONFIDENTIALITY``, 1–3).

    There is no per-ministry settings model yet; when there is, this is the one
    place to read it.
    """
    value = int(getattr(settings, "GENNAI_DEFAULT_CONFIDENTIALITY", 2))
    return min(max(value, MIN_LEVEL), MAX_LEVEL)


def max_message_chars() -> int:
    """Longest message a user may send."""
    return int(getattr(settings, "GENNAI_CHAT_MAX_MESSAGE_CHARS", 20_000))
