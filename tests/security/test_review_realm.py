"""Attacks on the Keycloak realm export, infra/keycloak/realm-gennai.json (security review).

``apps/accounts/tests/test_sync_keycloak.py::test_realm_export_matches_the_app`` checks
that the export agrees with the app (roles, groups, mappers, our URLs); this file checks
what an attacker on the ministries' network or with a stolen browser would try.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

REALM_EXPORT = Path(__file__).resolve().parents[2] / "infra" / "keycloak" / "realm-gennai.json"


@pytest.fixture(scope="module")
def realm() -> dict[str, Any]:
    return dict(json.loads(REALM_EXPORT.read_text(encoding="utf-8")))


def test_the_realm_requires_https_for_every_client_address(realm: dict[str, Any]) -> None:
    """``sslRequired: external`` exempts private addresses, i.e. every PC on a ministry's LAN:
    passwords, codes and session cookies of Keycloak could then travel in clear there."""
    assert realm["sslRequired"] == "all"


def test_no_client_allows_a_flow_that_skips_the_code_flow(realm: dict[str, Any]) -> None:
    for client in realm["clients"]:
        name = client["clientId"]
        assert client["publicClient"] is False, name
        assert client["implicitFlowEnabled"] is False, name
        assert client["directAccessGrantsEnabled"] is False, name
        assert client["attributes"].get("oauth2.device.authorization.grant.enabled") == "false", name
        assert client["attributes"].get("oidc.ciba.grant.enabled") == "false", name


def test_redirect_uris_are_exact_https_urls(realm: dict[str, Any]) -> None:
    """A wildcard or plain-HTTP redirect lets a code reach a page the attacker controls."""
    for client in realm["clients"]:
        uris = list(client["redirectUris"])
        post_logout = client["attributes"].get("post.logout.redirect.uris", "")
        uris += [u for u in post_logout.split("##") if u]
        for uri in uris:
            assert "*" not in uri and uri != "+", (client["clientId"], uri)
            assert urlsplit(uri).scheme == "https", (client["clientId"], uri)
        assert "*" not in client.get("webOrigins", []), client["clientId"]


def test_tokens_and_sessions_are_short_lived(realm: dict[str, Any]) -> None:
    assert realm["accessTokenLifespan"] <= 300
    assert realm["revokeRefreshToken"] is True and realm["refreshTokenMaxReuse"] == 0
    assert realm["ssoSessionMaxLifespan"] <= 8 * 3600
    assert realm["bruteForceProtected"] is True
    assert realm["registrationAllowed"] is False
