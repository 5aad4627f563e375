"""The newcomer path: what `make run` prints works as printed from a second terminal.

`make run` keeps its embedded servers' URLs in its own environment; it also
writes them to ``.gennai/dev/env``, which ``gennai.settings.dev`` reads. The
banner's API key command (``make api-key …``) must then reach the same database
from a shell that knows nothing else. Here the "running platform" is the test
database, and the env file is a temporary one (``GENNAI_DEV_ENV_FILE``) so that a
developer's real ``make run`` is never disturbed.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from apps.devidp.demo_users import DEMO_USERS, MINISTRIES
from gennai.devstack import envfile
from gennai.devstack.__main__ import api_key_command, demo_user_line, with_db

ROOT = Path(__file__).resolve().parents[1]


def second_terminal_env(**extra: str) -> dict[str, str]:
    """A fresh shell: no DJANGO_SETTINGS_MODULE, no database or Redis URLs."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, **extra}


DUMP_DEV = """
import json
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({"module": settings.SETTINGS_MODULE, "db": [db["HOST"], db["PORT"], db["NAME"]],
                  "redis": settings.REDIS_URL, "issuer": settings.OIDC_ISSUER}))
"""


def dump_dev(env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", DUMP_DEV],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "gennai.settings.dev"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_env_file_round_trip_is_private_and_removed_only_if_still_ours(tmp_path: Path) -> None:
    path = tmp_path / "dev" / "env"
    values = {
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:55432/gennai",
        "REDIS_URL": "redis://127.0.0.1:56379/0",
        "GENNAI_SECRET_KEY": "never shared",  # not a URL of the servers: not written
        "OIDC_ISSUER": "http://127.0.0.1:8001/realms/gennai",
    }
    path.parent.mkdir()
    path.write_text("stale\n")
    path.chmod(0o644)
    text = envfile.write(path, values)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert envfile.parse(path.read_text()) == {k: v for k, v in values.items() if k != "GENNAI_SECRET_KEY"}
    path.write_text(text + "REDIS_URL=redis://elsewhere/0\n")  # another make run took over
    envfile.remove_if_unchanged(path, text)
    assert path.exists()
    path.write_text(text)
    envfile.remove_if_unchanged(path, text)
    assert not path.exists()


def test_dev_settings_read_the_make_run_env_file_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    envfile.write(
        env_file,
        {
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:55999/gennai",
            "REDIS_URL": "redis://127.0.0.1:56999/0",
            "OIDC_ISSUER": "http://127.0.0.1:8999/realms/gennai",
        },
    )
    dev = dump_dev(second_terminal_env(GENNAI_DEV_ENV_FILE=str(env_file)))
    assert dev["module"] == "gennai.settings.dev"
    assert dev["db"] == ["127.0.0.1", 55999, "gennai"]
    assert dev["redis"] == "redis://127.0.0.1:56999/0"
    assert dev["issuer"] == "http://127.0.0.1:8999/realms/gennai"

    explicit = dump_dev(
        second_terminal_env(GENNAI_DEV_ENV_FILE=str(env_file), REDIS_URL="redis://127.0.0.1:6379/3")
    )
    assert explicit["redis"] == "redis://127.0.0.1:6379/3"
    assert explicit["db"] == ["127.0.0.1", 55999, "gennai"]


def test_production_settings_never_read_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    envfile.write(env_file, {"DATABASE_URL": "postgresql://postgres@127.0.0.1:55999/gennai"})
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=second_terminal_env(GENNAI_DEV_ENV_FILE=str(env_file), GENNAI_SECRET_KEY="x" * 60),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_the_banners_api_key_command_works_as_printed_from_another_terminal(
    ministries: tuple[Any, Any], tmp_path: Path
) -> None:
    from apps.gateway.models import ApiKey

    code = MINISTRIES[0]["code"]
    ministry = next(m for m in ministries if m.code == code)
    # What `make run` writes, pointing at the database this test runs on.
    env_file = tmp_path / "env"
    test_db_url = with_db(os.environ["DATABASE_URL"], str(connection.settings_dict["NAME"]))
    envfile.write(env_file, {"DATABASE_URL": test_db_url, "REDIS_URL": os.environ["REDIS_URL"]})

    command = api_key_command(code)
    assert command.startswith("make api-key ")
    result = subprocess.run(
        shlex.split(command),
        cwd=ROOT,
        env=second_terminal_env(GENNAI_DEV_ENV_FILE=str(env_file)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    key = result.stdout.strip()
    assert key and " " not in key and "\n" not in key
    created = ApiKey.objects.get(ministry=ministry, name="my-system")  # platform-level row
    assert created.prefix in key


def test_make_api_key_without_a_running_platform_says_what_to_do() -> None:
    if (ROOT / ".gennai" / "dev" / "env").exists():
        pytest.skip("a `make run` is running in this checkout")
    result = subprocess.run(
        ["make", "-s", "api-key", "MINISTRY=digital", "NAME=x"],
        cwd=ROOT,
        env=second_terminal_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "make run" in result.stderr


def test_banner_describes_every_demo_user() -> None:
    names = {m["code"]: m["name_ja"] for m in MINISTRIES}
    for demo in DEMO_USERS:
        line = demo_user_line(demo, names)
        assert line.startswith(demo["username"])
        for code in demo["ministries"]:
            assert names[code] in line
    # Roles given per ministry are shown per ministry.
    line = demo_user_line(
        {"username": "x", "ministries": ["digital"], "roles": {"digital": ["ministry_admin"]}}, names
    )
    assert "デジタル庁: ministry_admin" in line
