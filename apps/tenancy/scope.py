"""The active ministry scope.

A scope is entered only from trusted sources: the authenticated membership
(:mod:`apps.tenancy.middleware`), a Celery task's ``ministry_id`` argument
(:class:`apps.tenancy.tasks.TenantTask`), or a management command's
``--ministry`` option. Never from request parameters.

Entering a scope does two things, one per layer of isolation:

1. sets a context variable that :class:`~apps.tenancy.managers.TenantManager`
   reads to filter every query (and to refuse queries when it is unset);
2. opens a transaction and runs ``set_config('gennai.ministry_id', id, true)``
   (``SET LOCAL``) so PostgreSQL row-level security sees the same ministry. A
   transaction-local setting also works behind pgbouncer in transaction mode.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator
from contextvars import ContextVar

from django.conf import settings
from django.db import connection, transaction

logger = logging.getLogger("gennai.tenancy")

GUC_NAME = "gennai.ministry_id"

_ministry_id: ContextVar[int | None] = ContextVar("gennai_ministry_id", default=None)
_unscoped: ContextVar[bool] = ContextVar("gennai_unscoped", default=False)


class ScopeError(RuntimeError):
    """Raised when tenant data is queried without an active ministry scope."""


def current_ministry_id() -> int | None:
    """The ministry id of the active scope, or ``None``."""
    return _ministry_id.get()


def is_unscoped() -> bool:
    return _unscoped.get()


def _set_guc(value: int | None) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, true)", [GUC_NAME, "" if value is None else str(value)])


@contextlib.contextmanager
def ministry_scope(*, ministry_id: int) -> Iterator[None]:
    """Run the block as ministry ``ministry_id`` in both the ORM and PostgreSQL.

    The block runs inside ``transaction.atomic()``; nested scopes restore the
    outer ministry on exit.

    Security: ``ministry_id`` must be a positive ``int`` and not a ``bool``
    (``True`` is an ``int`` to Python: the ORM would filter on ministry 1 while
    PostgreSQL received the text ``'True'``).
    """
    if isinstance(ministry_id, bool) or not isinstance(ministry_id, int) or ministry_id <= 0:
        raise ScopeError(f"invalid ministry id: {ministry_id!r}")
    outer = _ministry_id.get()
    # SET LOCAL ends with the transaction: only a scope nested in an outer
    # transaction has to restore the outer setting (one round trip saved per request).
    nested = connection.in_atomic_block
    token = _ministry_id.set(ministry_id)
    try:
        with transaction.atomic():
            _set_guc(ministry_id)
            try:
                yield
            finally:
                if nested and not connection.needs_rollback and connection.is_usable():
                    _set_guc(outer)
    finally:
        _ministry_id.reset(token)


@contextlib.contextmanager
def unscoped(*, reason: str) -> Iterator[None]:
    """Allow TenantModel queries without a ministry filter at the ORM level.

    Security: only modules named in ``settings.GENNAI_UNSCOPED_ALLOWLIST`` may do
    this, and every use is logged with its reason. Row-level security still
    applies in the database, so the application role still sees at most the
    ministry set in ``gennai.ministry_id``. Every use is written to the audit log.
    Today only tests that must prove the database layer alone use it.
    """
    caller = inspect.stack()[2].frame.f_globals.get("__name__", "")
    allowed = settings.GENNAI_UNSCOPED_ALLOWLIST
    if not any(caller == mod or caller.startswith(mod + ".") for mod in allowed):
        raise ScopeError(f"module {caller!r} is not allowed unscoped tenant access")
    logger.warning("unscoped tenant access by %s: %s", caller, reason)
    from apps.audit.services import audit_record  # late import: audit depends on tenancy

    audit_record(
        actor=None,
        action="tenancy.unscoped",
        target_type="module",
        target_id=caller[:100],
        data={"reason": reason},
    )
    token = _unscoped.set(True)
    try:
        yield
    finally:
        _unscoped.reset(token)
