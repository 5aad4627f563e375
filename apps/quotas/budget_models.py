"""Budgets and limits (platform → ministry → team → user / API key). See apps.quotas.admission."""

from __future__ import annotations

__all__: list[str] = []
