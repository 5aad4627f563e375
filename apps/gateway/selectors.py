"""Reads of API keys. ApiKey is not a TenantModel, so every read names the ministry."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from apps.tenancy.models import Membership

from .models import ApiKey


def api_key_list(*, ministry_id: int) -> QuerySet[ApiKey]:
    """The ministry's keys, newest first (revoked ones included, for the record)."""
    return ApiKey.objects.filter(ministry_id=ministry_id).select_related("created_by")


def get_api_key_for_actor(*, actor: Membership, key_id: int) -> ApiKey:
    """Security: ``actor`` is the acting membership; "missing" and "another ministry's" are one 404."""
    key = ApiKey.objects.filter(pk=key_id, ministry_id=actor.ministry_id).first()
    if key is None:
        raise Http404
    return key
