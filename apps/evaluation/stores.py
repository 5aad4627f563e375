"""Which tables a suite's data lives in: the platform's, or its ministry's (TenantModels under RLS).

A platform suite and a ministry suite are evaluated, reported and exported by the same code; that
code takes the model classes from a :class:`Store` instead of naming them. ``scope(obj)`` is the
database context to touch a row of the store in: for a ministry row, that ministry's scope (ORM
filter and PostgreSQL RLS); for a platform row, a plain transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from apps.tenancy.scope import ministry_scope

from .models import (
    MinistryRun,
    MinistryRunCandidate,
    MinistryRunItem,
    MinistrySuite,
    MinistryTask,
    Run,
    RunCandidate,
    RunItem,
    Suite,
    Task,
)

PLATFORM = "platform"
MINISTRY = "ministry"


@dataclass(frozen=True)
class Store:
    owner: str
    suite: Any
    task: Any
    run: Any
    candidate: Any
    item: Any
    url_prefix: str  # prefix of the URL names: "evaluation:" or "evaluation:m_"

    @property
    def is_ministry(self) -> bool:
        return self.owner == MINISTRY

    @contextlib.contextmanager
    def scope(self, obj: Any) -> Iterator[None]:
        """Security: a ministry row is read and written only inside its own ministry's scope."""
        if self.is_ministry:
            with ministry_scope(ministry_id=int(obj.ministry_id)):
                yield
        else:
            with transaction.atomic():
                yield


PLATFORM_STORE = Store(
    owner=PLATFORM,
    suite=Suite,
    task=Task,
    run=Run,
    candidate=RunCandidate,
    item=RunItem,
    url_prefix="evaluation:",
)
MINISTRY_STORE = Store(
    owner=MINISTRY,
    suite=MinistrySuite,
    task=MinistryTask,
    run=MinistryRun,
    candidate=MinistryRunCandidate,
    item=MinistryRunItem,
    url_prefix="evaluation:m_",
)
STORES = {PLATFORM: PLATFORM_STORE, MINISTRY: MINISTRY_STORE}


def store_for(obj: Any) -> Store:
    """The store of a suite, task, run, candidate or item (by its class)."""
    if isinstance(obj, MinistrySuite | MinistryTask | MinistryRun | MinistryRunCandidate | MinistryRunItem):
        return MINISTRY_STORE
    return PLATFORM_STORE
