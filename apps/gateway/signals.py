"""Keep API keys in step with the facts they depend on, whoever changes those facts.

Memberships and ministries are written by other apps (claim mapping at login,
Keycloak sync, the admin site); these receivers run in the *same transaction*
as those writes, so no code path that saves or deletes through the ORM can
forget to revoke or to invalidate:

* a membership saved without the ministry-admin role, or deleted, or its user
  deactivated or deleted → the keys that user created in that ministry are revoked
  (audited) and every process forgets its cached key facts;
* a ministry saved (e.g. deactivated) → every process re-reads key facts, so a
  deactivated ministry's keys stop within ``check_seconds()``.

A write that bypasses the ORM signals (``QuerySet.update()``, raw SQL) is still
caught by the key check itself (it reads the creator's role and the ministry's
state with the key facts), within ``max_age_seconds()``.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save, pre_delete

from apps.tenancy.models import Membership, Ministry, Role


def _membership_saved(sender: Any, instance: Membership, raw: bool = False, **_: Any) -> None:
    if raw:
        return  # loaddata: rows as stored, no side effects
    if instance.has_role(Role.MINISTRY_ADMIN) and instance.user.is_active:
        return  # nothing lost (the common case: every login re-saves the membership)
    from .services import api_keys_revoke_for_lost_admin

    api_keys_revoke_for_lost_admin(user_id=instance.user_id, ministry_id=instance.ministry_id)


def _membership_deleted(sender: Any, instance: Membership, **_: Any) -> None:
    from .services import api_keys_revoke_for_lost_admin

    api_keys_revoke_for_lost_admin(user_id=instance.user_id, ministry_id=instance.ministry_id)


def _user_saved(sender: Any, instance: Any, raw: bool = False, **_: Any) -> None:
    if raw or instance.is_active:
        return
    from .services import api_keys_revoke_for_lost_admin

    for ministry_id in Membership.objects.filter(user_id=instance.pk).values_list("ministry_id", flat=True):
        api_keys_revoke_for_lost_admin(user_id=instance.pk, ministry_id=ministry_id)


def _user_deleting(sender: Any, instance: Any, **_: Any) -> None:
    # Before the deletion nulls ``ApiKey.created_by``: afterwards the keys could not be found by creator.
    from .services import api_keys_revoke_for_creator

    api_keys_revoke_for_creator(user_id=instance.pk)


def _ministry_saved(sender: Any, instance: Ministry, created: bool, raw: bool = False, **_: Any) -> None:
    if created or raw:
        return  # a new ministry has no keys yet
    from .services import ministry_keys_invalidate

    ministry_keys_invalidate()


def connect() -> None:
    from django.contrib.auth import get_user_model

    post_save.connect(_membership_saved, sender=Membership, dispatch_uid="gateway.keys.membership_saved")
    post_delete.connect(
        _membership_deleted, sender=Membership, dispatch_uid="gateway.keys.membership_deleted"
    )
    post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid="gateway.keys.user_saved")
    pre_delete.connect(_user_deleting, sender=get_user_model(), dispatch_uid="gateway.keys.user_deleting")
    post_save.connect(_ministry_saved, sender=Ministry, dispatch_uid="gateway.keys.ministry_saved")
