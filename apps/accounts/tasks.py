"""Beat tasks of accounts (thin: the work is in :mod:`apps.accounts.services`)."""

from __future__ import annotations

from celery import shared_task

from .services import sessions_sweep


@shared_task(name="accounts.sessions_sweep")
def sessions_sweep_task() -> tuple[int, int]:
    """Beat: delete expired sessions and the token records of ended sessions."""
    return sessions_sweep()
