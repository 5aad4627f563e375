"""What a model call cost, in yen, from the registry's prices.

Two ways to price a call, chosen per deployment:

* **GPU-hour share** (on-prem deployments with ``gpu_hour_yen`` and
  ``throughput_tokens_per_s`` set): the call's tokens kept the deployment's GPUs
  busy for ``tokens / throughput`` seconds, so::

      cost = (prompt_tokens + completion_tokens) / throughput_tokens_per_s / 3600
             × gpu_hour_yen × gpu_count

  ``throughput_tokens_per_s`` is the deployment's measured aggregate throughput
  (prompt + completion tokens per second at its serving concurrency, from
  ``inference bench``), ``gpu_count`` the GPUs it occupies (a fraction for a
  shared or MIG-sliced GPU). At full load the calls of an hour then add up to
  exactly the hour's GPU price; below full load the idle time is not charged to
  anyone (it is the platform's capacity cost, not a ministry's usage).
* **Per-token price** (every other deployment, and calls known only by model
  name): ``prompt_tokens × price_input_per_1m / 1e6 + completion_tokens ×
  price_output_per_1m / 1e6`` from :class:`apps.registry.models.Model`.

Prices come from the registry snapshot (:mod:`apps.registry.snapshot`): no
query per call; a price change reaches every process within a second, like an
alias change. Costs are rounded half-up to 4 decimal places (``UsageRecord.cost_yen``).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from apps.registry.snapshot import DeploymentInfo, ModelPrice, Snapshot, get_snapshot

QUANTUM = Decimal("0.0001")
_MILLION = Decimal(1_000_000)
_HOUR = Decimal(3600)


def _quantize(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_HALF_UP)


def per_token_cost(*, price: ModelPrice, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """Cost at the model's per-1M-token prices."""
    raw = (
        Decimal(max(prompt_tokens, 0)) * price.price_input_per_1m
        + Decimal(max(completion_tokens, 0)) * price.price_output_per_1m
    ) / _MILLION
    return _quantize(raw)


def gpu_share_cost(
    *, gpu_hour_yen: Decimal, gpu_count: Decimal, throughput_tokens_per_s: int, tokens: int
) -> Decimal:
    """Cost as the share of GPU time the tokens took (see the module docstring)."""
    if throughput_tokens_per_s <= 0:
        raise ValueError("throughput must be positive")
    raw = Decimal(max(tokens, 0)) / Decimal(throughput_tokens_per_s) / _HOUR * gpu_hour_yen * gpu_count
    return _quantize(raw)


def deployment_cost(*, deployment: DeploymentInfo, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """Cost of a call served by ``deployment`` (GPU-hour share if it has one, else per token)."""
    if deployment.gpu_hour_yen is not None and deployment.throughput_tokens_per_s:
        return gpu_share_cost(
            gpu_hour_yen=deployment.gpu_hour_yen,
            gpu_count=deployment.gpu_count,
            throughput_tokens_per_s=deployment.throughput_tokens_per_s,
            tokens=max(prompt_tokens, 0) + max(completion_tokens, 0),
        )
    return per_token_cost(
        price=ModelPrice(deployment.price_input_per_1m, deployment.price_output_per_1m),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


def cost_yen(
    *,
    prompt_tokens: int,
    completion_tokens: int,
    deployment_id: int | None = None,
    model_name: str = "",
    snapshot: Snapshot | None = None,
) -> Decimal:
    """The cost of one call in yen: by its deployment when known, else by its model's name.

    Unknown deployment and model (deleted since, or a refused call that reached
    none) cost 0 — the record still counts its tokens.
    """
    snap = snapshot or get_snapshot()
    if deployment_id is not None:
        deployment = snap.deployments.get(deployment_id)
        if deployment is not None:
            return deployment_cost(
                deployment=deployment, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )
    price = snap.model_prices.get(model_name) if model_name else None
    if price is None:
        return Decimal(0).quantize(QUANTUM)
    return per_token_cost(price=price, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)


def model_name_for(*, deployment_id: int | None, snapshot: Snapshot | None = None) -> str:
    """The registry model name a deployment serves ("" if unknown)."""
    if deployment_id is None:
        return ""
    deployment = (snapshot or get_snapshot()).deployments.get(deployment_id)
    return deployment.model_name if deployment is not None else ""
