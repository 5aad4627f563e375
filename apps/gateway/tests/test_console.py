"""Header navigation to the API key console."""

from __future__ import annotations

from typing import Any

from django.test import Client


def test_header_links_api_keys_only_for_ministry_admins(client: Client, ministries: Any) -> None:
    from tests.support.fixtures import make_user

    digital, _ = ministries
    admin = make_user("header-admin", digital, ["staff", "ministry_admin"])
    staff = make_user("header-staff", digital, ["staff"])
    client.force_login(admin)
    assert 'data-testid="nav-api-keys"' in client.get("/").content.decode()
    client.force_login(staff)
    assert 'data-testid="nav-api-keys"' not in client.get("/").content.decode()
