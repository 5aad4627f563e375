"""Background work of the registry. Platform-wide: these are not TenantTasks."""

from __future__ import annotations

from gennai.celery import app

from .selectors import enabled_deployments
from .services import deployment_health_check


@app.task(name="registry.deployment_health_check_all", ignore_result=True)
def deployment_health_check_all() -> dict[int, str]:
    """Probe every enabled deployment's provider ``health()`` and record the states.

    Scheduled every 30 s by ``CELERY_BEAT_SCHEDULE`` (gennai/settings/base.py).
    Registry rows are not tenant data, so no ministry scope is entered. The
    probes run concurrently, each bounded by the provider's own timeout; only a
    change of state invalidates the routing snapshot, and nothing is audited
    (a probe is an observation, not a human change).
    """
    return deployment_health_check(deployments=enabled_deployments())
