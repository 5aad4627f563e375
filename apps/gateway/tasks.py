"""Background work of the gateway. Platform-wide (ApiKey is not tenant data): not TenantTasks."""

from __future__ import annotations

import logging

from django.conf import settings

from gennai.celery import app

from .directory import KeycloakDirectory
from .services import api_keys_recheck_creators

logger = logging.getLogger("gennai.gateway")


@app.task(name="gateway.api_key_creators_recheck", ignore_result=True)
def api_key_creators_recheck() -> int:
    """Ask Keycloak whether each key's creator is still the ministry's admin; revoke if not.

    Scheduled by ``CELERY_BEAT_SCHEDULE`` every ``GENNAI_API_KEY_CREATOR_RECHECK_SECONDS``
    (default 300). A no-op without ``KEYCLOAK_URL`` (development uses the dev IdP,
    whose role changes reach Gennai through logins and session re-checks only).
    Returns the number of keys revoked.
    """
    if not str(getattr(settings, "KEYCLOAK_URL", "")).strip():
        return 0
    from apps.accounts.keycloak_sync import keycloak_admin_from_settings

    directory = KeycloakDirectory(keycloak_admin_from_settings(), client_id=settings.OIDC_RP_CLIENT_ID)
    revoked = api_keys_recheck_creators(directory=directory)
    if revoked:
        logger.info("revoked %d API key(s) whose creator is no longer a ministry admin", len(revoked))
    return len(revoked)
