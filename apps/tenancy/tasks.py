"""Celery base task that re-enters the ministry scope in the worker."""

from __future__ import annotations

from typing import Any

from celery import Task

from .scope import ScopeError, ministry_scope


class TenantTask(Task):  # type: ignore[type-arg]
    """Base for tasks that touch tenant data.

    Tasks take plain ids, including ``ministry_id`` as a keyword argument, which
    is the only source of the worker's scope. Queue with
    ``task.delay(ministry_id=..., ...)`` from a service, after commit.
    """

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ministry_id = kwargs.get("ministry_id")
        if isinstance(ministry_id, bool) or not isinstance(ministry_id, int):
            raise ScopeError(f"{self.name} needs an integer ministry_id keyword argument")
        with ministry_scope(ministry_id=ministry_id):
            return super().__call__(*args, **kwargs)
