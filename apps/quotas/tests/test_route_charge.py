"""What admission takes from a route (zone, price), and reservations that outlive a cancellation."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from apps.quotas.route_charge import plan_price_per_1m, plan_zone, reserve_or_release


def _plan(*deployments: Any) -> Any:
    return SimpleNamespace(candidates=deployments)


def _deployment(zone: str, price_in: str = "0", price_out: str = "0") -> Any:
    return SimpleNamespace(
        zone=zone,
        price_input_per_1m=Decimal(price_in),
        price_output_per_1m=Decimal(price_out),
        gpu_hour_yen=None,
        gpu_count=Decimal(1),
        throughput_tokens_per_s=None,
    )


def test_the_strictest_zone_and_the_highest_price_of_any_candidate_apply() -> None:
    assert plan_zone(_plan(_deployment("on_prem"))) == "on_prem"
    assert plan_zone(_plan(_deployment("on_prem"), _deployment("external"))) == "external"
    assert plan_zone(_plan(_deployment("gov_cloud"), _deployment("on_prem"))) == "gov_cloud"
    assert plan_zone(_plan(_deployment("moon"), _deployment("external"))) == "moon", "unknown: strictest"
    assert plan_price_per_1m(_plan(_deployment("on_prem"))) is None
    priced = _plan(_deployment("external", "300", "1200"), _deployment("on_prem", "50", "100"))
    assert plan_price_per_1m(priced) == Decimal("1200.0000")


def test_a_reservation_made_after_a_cancellation_is_handed_over_and_the_cancellation_goes_on() -> None:
    released: list[str] = []

    async def slow_reserve() -> Any:
        await asyncio.sleep(0.1)
        return "reservation-1"

    async def release(reservation: Any) -> None:
        released.append(reservation)

    async def main() -> None:
        task = asyncio.ensure_future(reserve_or_release(slow_reserve(), release))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert released == ["reservation-1"]


def test_a_refusal_during_a_cancellation_releases_nothing() -> None:
    released: list[Any] = []

    async def refused() -> Any:
        await asyncio.sleep(0.05)
        raise RuntimeError("over the limit")

    async def release(reservation: Any) -> None:
        released.append(reservation)

    async def main() -> None:
        task = asyncio.ensure_future(reserve_or_release(refused(), release))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert released == []
