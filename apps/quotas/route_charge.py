"""What admission needs to know about a route: its zone and its price (no I/O, event-loop safe).

The router may fail over to any candidate of a plan, so a request is admitted
under the strictest zone among them (what happens when Redis is down, see
:func:`apps.quotas.admission.redis_down_policy`) and its yen estimate uses the
most expensive candidate: a reservation never under-estimates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TypeVar

from apps.registry.router import RoutePlan

from .pricing import deployment_cost

T = TypeVar("T")  # a Reservation (or None where nothing had to be reserved)

#: Zones from the least to the most strict about Redis being down.
ZONE_ORDER = ("on_prem", "gov_cloud", "external")


def plan_zone(plan: RoutePlan) -> str:
    """The strictest zone among the plan's candidates (an unknown zone counts as the strictest)."""
    zones = {d.zone for d in plan.candidates} or {"on_prem"}
    return max(zones, key=lambda z: ZONE_ORDER.index(z) if z in ZONE_ORDER else len(ZONE_ORDER))


def plan_price_per_1m(plan: RoutePlan) -> Decimal | None:
    """The highest price per 1M tokens (input or output) among the candidates; ``None`` if all free."""
    prices = [
        max(
            deployment_cost(deployment=d, prompt_tokens=1_000_000, completion_tokens=0),
            deployment_cost(deployment=d, prompt_tokens=0, completion_tokens=1_000_000),
        )
        for d in plan.candidates
    ]
    price = max(prices, default=Decimal(0))
    return price if price > 0 else None


async def reserve_or_release(reserve: Awaitable[T], on_cancel: Callable[[T], Awaitable[None]]) -> T:
    """Await a reservation so that a cancellation while it is made cannot leak it.

    A client that goes away while the admission script runs cancels the request
    task; without this the reservation would be made in Redis but never seen,
    holding its budget and its concurrency slot until it expires. Here the
    script's call is shielded: on cancellation it is awaited to its end, its
    reservation (if any) handed to ``on_cancel`` (which settles it — to nothing,
    as nothing reached a model), and the cancellation goes on.
    """
    task = asyncio.ensure_future(reserve)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            reservation = await task
        except Exception:  # noqa: BLE001 - refused or failed: nothing was reserved, nothing to release
            raise asyncio.CancelledError() from None
        await on_cancel(reservation)
        raise
