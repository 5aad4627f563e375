"""What admission needs to know about a route: its zone and its price (no I/O, event-loop safe).

The router may fail over to any candidate of a plan, so a request is admitted
under the strictest zone among them (what happens when Redis is down, see
:func:`apps.quotas.admission.redis_down_policy`) and its yen estimate uses the
most expensive candidate: a reservation never under-estimates.
"""

from __future__ import annotations

from decimal import Decimal

from apps.registry.router import RoutePlan

from .pricing import deployment_cost

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
