"""Daily usage rollups: what the dashboards read instead of scanning ``UsageRecord``.

One row per ministry, day (Japan time, ``settings.TIME_ZONE``) and key
``(team, user, api_key, alias, model, feature)``, recomputed from the raw
records by :mod:`apps.quotas.rollups` (idempotent upserts). A dashboard over a
month reads at most a few thousand rows per ministry, however many millions of
records the month holds.
"""

from __future__ import annotations

from django.db import models

from apps.tenancy.models import TenantModel

__all__ = ["UsageDaily"]


class UsageDaily(TenantModel):
    """Sums of one day's usage records for one key, derived data (never edited by people).

    ``team_id``, ``user_id`` and ``api_key_id`` are plain columns, not foreign
    keys: a rollup must survive the deletion of what it counts (a departed user,
    a revoked key, a removed team), and a foreign key would either block the
    deletion or rewrite the key of historic rows. They are still ids of rows of
    the same ministry: they are copied from the ministry's own ``UsageRecord``
    rows, under RLS, by the rollup and nothing else.
    """

    day = models.DateField()
    team_id = models.BigIntegerField(null=True, blank=True)
    user_id = models.BigIntegerField(null=True, blank=True)
    api_key_id = models.BigIntegerField(null=True, blank=True)
    alias_name = models.CharField(max_length=100)
    model_name = models.CharField(max_length=200, blank=True)
    feature = models.CharField(max_length=16)

    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)  # status "error"
    refused = models.BigIntegerField(default=0)  # status "refused" (limits, clearance)
    interrupted = models.BigIntegerField(default=0)  # client stopped or the gateway was lost
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_yen = models.DecimalField(max_digits=18, decimal_places=4, default=0)
    latency_ms_sum = models.BigIntegerField(default=0)
    ttft_ms_sum = models.BigIntegerField(default=0)
    ttft_count = models.BigIntegerField(default=0)  # records with a TTFT (averages divide by this)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["day", "id"]
        constraints = [
            # The rollup's upsert target. NULLS NOT DISTINCT: "no team" is one key, not many.
            models.UniqueConstraint(
                fields=[
                    "ministry",
                    "day",
                    "team_id",
                    "user_id",
                    "api_key_id",
                    "alias_name",
                    "model_name",
                    "feature",
                ],
                name="usagedaily_key_uniq",
                nulls_distinct=False,
            )
        ]

    def __str__(self) -> str:
        return f"{self.day}:{self.alias_name}:{self.feature}:{self.requests}"
