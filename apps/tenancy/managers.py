"""Fail-closed managers for tenant-owned models (django-scopes style)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from django.db import models

from .scope import ScopeError, current_ministry_id, is_unscoped

if TYPE_CHECKING:
    from .models import TenantModel

M = TypeVar("M", bound="TenantModel")


class TenantQuerySet(models.QuerySet[M]):
    pass


class TenantManager(models.Manager[M]):
    """Default manager of every TenantModel.

    Security: refuses to build any queryset unless a ministry scope is active,
    and then always filters on that ministry. A forgotten filter therefore raises
    instead of leaking another ministry's rows; RLS is the second line.
    """

    def get_queryset(self) -> models.QuerySet[M]:
        ministry_id = current_ministry_id()
        qs: TenantQuerySet[M] = TenantQuerySet(self.model, using=self._db)
        if ministry_id is not None:
            return qs.filter(ministry_id=ministry_id)
        if is_unscoped():
            return qs
        raise ScopeError(
            f"{self.model.__name__} queried without a ministry scope; "
            "enter apps.tenancy.scope.ministry_scope() first"
        )

    def create(self, **kwargs: Any) -> M:
        ministry_id = current_ministry_id()
        if ministry_id is not None:
            given = kwargs.get("ministry_id") or getattr(kwargs.get("ministry"), "pk", None)
            if given is not None and given != ministry_id:
                raise ScopeError("cannot create a row for another ministry than the active scope")
            if given is None and "ministry" not in kwargs:
                kwargs["ministry_id"] = ministry_id
        return super().create(**kwargs)
