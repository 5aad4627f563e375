"""Start the dev IdP (apps.devidp) as a separate process for the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = os.environ.get("OIDC_CLIENT_ID", "gennai-web")
CLIENT_SECRET = os.environ.get("OIDC_CLIENT_SECRET", "gennai-dev-client-secret")


def _require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: run the suite with `make test` "
            "(python -m gennai.devstack env -- pytest), which provides it."
        )
    return value


@dataclass
class DevIdP:
    url: str
    issuer: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    app_urls: list[str] = field(default_factory=list)

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout

    def register_app(self, app_url: str) -> None:
        """Point the OIDC client's redirect, post-logout and back-channel URIs at ``app_url``."""
        app_url = app_url.rstrip("/")
        if app_url not in self.app_urls:
            self.app_urls.append(app_url)
        args = ["idp_seed", "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET]
        for url in self.app_urls:
            args += ["--redirect-uri", f"{url}/accounts/callback/", "--post-logout-redirect-uri", f"{url}/"]
        args += ["--backchannel-logout-uri", f"{app_url}/accounts/backchannel-logout/"]
        self.manage(*args)

    def backchannel_logout(self, username: str) -> list[dict[str, object]]:
        response = httpx.post(
            f"{self.issuer}/dev/backchannel-logout", data={"username": username}, timeout=30
        )
        response.raise_for_status()
        return (
            list(response.json()["deliveries"])
            if isinstance(response.json(), dict)
            else list(response.json())
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_dev_idp() -> DevIdP:
    issuer = _require("OIDC_ISSUER")
    idp_url = f"{urlsplit(issuer).scheme}://{urlsplit(issuer).netloc}"
    db_url = _require("GENNAI_IDP_DATABASE_URL")
    admin_url = _require("GENNAI_PG_ADMIN_URL")
    from gennai.devstack.__main__ import ensure_database

    ensure_database(admin_url, urlsplit(db_url).path.lstrip("/"), recreate=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gennai.settings.idp",
        "GENNAI_IDP_URL": idp_url,
        "GENNAI_IDP_DEV_TOOLS": "1",
    }
    idp = DevIdP(url=idp_url, issuer=issuer, env=env)
    idp.manage("migrate", "--no-input", "-v", "0")
    idp.register_app("http://testserver")
    log_path = ROOT / ".gennai" / "test" / "idp.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port = urlsplit(issuer).port or 80
    with log_path.open("wb") as log:
        idp.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                # A plain Django app under gennai.settings.idp (gennai.asgi mounts the app's /v1).
                "--factory",
                "django.core.asgi:get_asgi_application",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    idp.log_path = log_path
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=2).status_code == 200:
                return idp
        except httpx.HTTPError:
            pass
        if idp.process.poll() is not None:
            break
        time.sleep(0.2)
    idp.stop()
    raise RuntimeError(f"dev IdP did not start; see {log_path}:\n{log_path.read_text()[-3000:]}")
