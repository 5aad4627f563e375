"""Request bodies over the limit are refused before Django spools them (gennai/body_limit.py).

Driven through the production ASGI application (``gennai.asgi``: the lean /v1
front, the body limit, then Django) with hand-made ASGI messages, so the test
sees exactly how much of the body was read and every message sent; and once
over a real uvicorn server with an HTTP client. The upload view's larger limit
is for signed-in, active users only: those tests put a recording application
behind the wrapper, to see whether (and how much of) a body was passed on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import Client, override_settings
from django.utils import timezone

from apps.accounts.models import Session
from gennai import body_limit
from gennai.asgi import application
from gennai.body_limit import MULTIPART_SLACK, RequestBodyLimit, body_limit_for
from tests.support.asgi import AsgiServer

CHUNK = 64 * 1024


def _scope(
    path: str, *, method: str = "POST", content_length: int | None = None, cookie: str | None = None
) -> dict[str, Any]:
    headers = [(b"host", b"testserver"), (b"content-type", b"application/x-www-form-urlencoded")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("latin-1")))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


def _drive(scope: dict[str, Any], *, chunks: int, app: Any = application) -> tuple[list[dict[str, Any]], int]:
    """Run ``app`` on a body of ``chunks`` × 64 KiB (none: 0); the messages sent and chunks read.

    Through ``async_to_sync``, so that the wrapper's database hop runs on this
    thread, inside the test's transaction.
    """
    sent: list[dict[str, Any]] = []
    read = 0

    empty_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal read, empty_sent
        if read < chunks:
            read += 1
            return {"type": "http.request", "body": b"x" * CHUNK, "more_body": read < chunks}
        if chunks == 0 and not empty_sent:  # no body: one empty message, as servers send
            empty_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)  # the client waits for the answer
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    async def run() -> None:
        await asyncio.wait_for(app(scope, receive, send), timeout=30)

    async_to_sync(run)()
    return sent, read


@override_settings(GENNAI_MAX_REQUEST_BYTES=4 * CHUNK)
def test_a_declared_length_over_the_limit_is_refused_before_anything_is_read() -> None:
    sent, read = _drive(_scope("/chat/", content_length=100 * CHUNK), chunks=100)
    assert read == 0
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 413
    text = sent[1]["body"].decode()
    assert "リクエストが大きすぎます" in text and "Request body too large" in text and str(4 * CHUNK) in text


@override_settings(GENNAI_MAX_REQUEST_BYTES=4 * CHUNK)
def test_a_chunked_body_is_cut_at_the_limit_and_django_answers_nothing() -> None:
    """No Content-Length: reading stops at the first chunk past the limit; one 413, nothing from Django."""
    sent, read = _drive(_scope("/chat/"), chunks=100)
    assert read == 5  # 4 chunks fit; the 5th goes over
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [413]
    assert len(sent) == 2


@override_settings(GENNAI_MAX_REQUEST_BYTES=4 * CHUNK)
def test_a_body_within_the_limit_reaches_django() -> None:
    """Django answers (here: CSRF refuses the anonymous POST) — the limit let the body through."""
    sent, read = _drive(_scope("/chat/", content_length=2 * CHUNK), chunks=2)
    assert read == 2
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] != 413


@override_settings(
    GENNAI_MAX_REQUEST_BYTES=CHUNK, GENNAI_DOCUMENT_MAX_FILES=3, GENNAI_DOCUMENT_MAX_BYTES=2 * CHUNK
)
def test_the_document_upload_view_gets_room_for_its_files_and_nothing_else_does() -> None:
    upload = "/documents/workspaces/7/upload"
    assert body_limit_for(upload) == 3 * 2 * CHUNK + MULTIPART_SLACK
    assert body_limit_for("/documents/workspaces/7/") == CHUNK
    assert body_limit_for("/documents/workspaces/7/upload/../../../x") == CHUNK
    assert body_limit_for("/no/such/page") == CHUNK
    sent, read = _drive(_scope(upload, content_length=5 * CHUNK), chunks=5)
    assert sent[0]["status"] == 413 and read == 0  # anonymous: the general limit
    sent, _read = _drive(_scope("/chat/", content_length=5 * CHUNK), chunks=5)
    assert sent[0]["status"] == 413


@override_settings(GENNAI_MAX_REQUEST_BYTES=CHUNK)
def test_v1_keeps_its_own_limit() -> None:
    """/v1 is limited by the lean front (validation.MAX_BODY_BYTES), not by the general limit."""
    assert body_limit_for("/v1/chat/completions") == CHUNK  # what the wrapper would use, were it asked
    sent, _read = _drive(_scope("/v1/chat/completions", content_length=2 * CHUNK), chunks=2)
    assert sent[0]["status"] != 413  # a browser-session /v1 request within the /v1 limit goes on to Django


@pytest.mark.django_db(transaction=True)
@override_settings(GENNAI_MAX_REQUEST_BYTES=4 * CHUNK)
def test_over_a_real_server_a_large_post_gets_413_and_the_server_keeps_serving() -> None:
    server = AsgiServer().start()
    try:
        response = httpx.post(server.url + "/chat/", content=b"x" * (10 * CHUNK), timeout=10)
        assert response.status_code == 413
        assert "Request body too large" in response.text
        # A chunked upload of unknown length, over a raw socket: refused once past the limit.
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /chat/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            answer = b""
            try:
                for _ in range(64):
                    sock.sendall(f"{CHUNK:x}\r\n".encode() + b"y" * CHUNK + b"\r\n")
            except OSError:
                pass  # the server answered and closed while we were still sending
            sock.settimeout(10)
            while b"\r\n\r\n" not in answer:
                part = sock.recv(4096)
                if not part:
                    break
                answer += part
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    finally:
        server.stop()


# --- The upload view's larger limit is for signed-in, active users only ----------------------

UPLOAD = "/documents/workspaces/7/upload"
#: General limit 1 chunk; upload limit 3 × 2 chunks + MULTIPART_SLACK (16 chunks) = 22 chunks.
SMALL_LIMITS = override_settings(
    GENNAI_MAX_REQUEST_BYTES=CHUNK, GENNAI_DOCUMENT_MAX_FILES=3, GENNAI_DOCUMENT_MAX_BYTES=2 * CHUNK
)
UPLOAD_CHUNKS = (6 * CHUNK + MULTIPART_SLACK) // CHUNK


class Recorder:
    """Stands in for Django behind the wrapper: reads the whole body, answers 200."""

    def __init__(self) -> None:
        self.called = False
        self.body = 0
        self.disconnected = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                return
            self.body += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _limited(scope: dict[str, Any], *, chunks: int) -> tuple[list[dict[str, Any]], int, Recorder]:
    app = Recorder()
    sent, read = _drive(scope, chunks=chunks, app=RequestBodyLimit(app))
    return sent, read, app


def _cookie(user: Any) -> str:
    """A real session of ``user``, as the browser's Cookie header."""
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def _refused_as_anonymous(sent: list[dict[str, Any]]) -> None:
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 413
    text = sent[1]["body"].decode()
    assert "Request body too large (limit 65536 bytes)" in text
    assert "サインインしていないため、上限は 65536 バイトです" in text
    assert "Not signed in: the limit is 65536 bytes. Sign in and send it again." in text


def _gets_the_general_limit(cookie: str) -> None:
    """A declared body over the general limit is refused before a byte is read, and a chunked
    one is cut once past it: both as for an anonymous client."""
    sent, read, app = _limited(_scope(UPLOAD, content_length=5 * CHUNK, cookie=cookie), chunks=5)
    assert read == 0 and not app.called
    _refused_as_anonymous(sent)
    sent, read, app = _limited(_scope(UPLOAD, cookie=cookie), chunks=5)
    assert read == 2
    _refused_as_anonymous(sent)


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The session keys the wrapper asked the database about."""
    asked: list[str] = []
    check = body_limit.session_user_may_send_more

    def recording(session_key: str) -> bool:
        asked.append(session_key)
        return check(session_key)

    monkeypatch.setattr(body_limit, "session_user_may_send_more", recording)
    return asked


@SMALL_LIMITS
def test_anonymous_upload_over_the_general_limit_is_refused_before_anything_is_read(hops: list[str]) -> None:
    sent, read, app = _limited(_scope(UPLOAD, content_length=5 * CHUNK), chunks=5)
    assert read == 0 and not app.called
    _refused_as_anonymous(sent)
    assert hops == []  # no cookie: no database hop either


@SMALL_LIMITS
def test_anonymous_chunked_upload_is_cut_at_the_general_limit(hops: list[str]) -> None:
    sent, read, app = _limited(_scope(UPLOAD), chunks=10)
    assert read == 2  # the 1st chunk fits the general limit, the 2nd goes over
    assert app.body == CHUNK and app.disconnected
    _refused_as_anonymous(sent)
    assert hops == []


@pytest.mark.django_db
@SMALL_LIMITS
def test_a_signed_in_user_may_send_up_to_the_upload_limit(staff_a: Any, hops: list[str]) -> None:
    cookie = _cookie(staff_a.user)
    sent, read, app = _limited(_scope(UPLOAD, content_length=5 * CHUNK, cookie=cookie), chunks=5)
    assert read == 5 and app.body == 5 * CHUNK
    assert sent[0]["status"] == 200
    # Chunked: the session is asked once the body passes the general limit, and only once.
    hops.clear()
    sent, read, app = _limited(_scope(UPLOAD, cookie=cookie), chunks=5)
    assert read == 5 and app.body == 5 * CHUNK and sent[0]["status"] == 200
    assert len(hops) == 1
    # Past the upload limit a signed-in user is refused too, at the upload limit.
    sent, read, app = _limited(_scope(UPLOAD, cookie=cookie), chunks=UPLOAD_CHUNKS + 10)
    assert read == UPLOAD_CHUNKS + 1
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [413]
    text = sent[-1]["body"].decode()
    assert f"limit {UPLOAD_CHUNKS * CHUNK} bytes" in text and "Not signed in" not in text
    sent, read, app = _limited(
        _scope(UPLOAD, content_length=(UPLOAD_CHUNKS + 1) * CHUNK, cookie=cookie), chunks=1
    )
    assert read == 0 and not app.called and sent[0]["status"] == 413


@pytest.mark.django_db
@SMALL_LIMITS
def test_the_larger_limit_is_only_for_the_upload_view(staff_a: Any) -> None:
    sent, read, app = _limited(
        _scope("/chat/", content_length=5 * CHUNK, cookie=_cookie(staff_a.user)), chunks=5
    )
    assert read == 0 and not app.called and sent[0]["status"] == 413
    assert "Not signed in" not in sent[1]["body"].decode()


@pytest.mark.django_db
@SMALL_LIMITS
def test_an_inactive_user_gets_the_general_limit(staff_a: Any) -> None:
    cookie = _cookie(staff_a.user)
    staff_a.user.is_active = False
    staff_a.user.save(update_fields=["is_active"])
    _gets_the_general_limit(cookie)


@pytest.mark.django_db
@SMALL_LIMITS
def test_an_expired_session_gets_the_general_limit(staff_a: Any) -> None:
    cookie = _cookie(staff_a.user)
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    sent, read, app = _limited(_scope(UPLOAD, content_length=5 * CHUNK, cookie=cookie), chunks=5)
    assert read == 0 and not app.called
    _refused_as_anonymous(sent)


@pytest.mark.django_db
@SMALL_LIMITS
def test_a_session_whose_auth_hash_does_not_verify_gets_the_general_limit_and_is_left_alone(
    staff_a: Any,
) -> None:
    """E.g. the password (here: the stored hash) changed since sign-in. The check writes nothing:
    Django itself flushes such a session when the request reaches it."""
    cookie = _cookie(staff_a.user)
    staff_a.user.set_unusable_password()
    staff_a.user.save(update_fields=["password"])
    sent, read, _app = _limited(_scope(UPLOAD, content_length=5 * CHUNK, cookie=cookie), chunks=5)
    assert read == 0
    _refused_as_anonymous(sent)
    assert Session.objects.filter(session_key=cookie.split("=", 1)[1]).exists()


@pytest.mark.django_db
@SMALL_LIMITS
def test_a_session_verified_by_a_fallback_secret_passes_and_keeps_its_key(staff_a: Any) -> None:
    """``get_user`` cycles such a session's key; the check must not (the browser's cookie names it)."""
    cookie = _cookie(staff_a.user)
    with override_settings(
        SECRET_KEY="a-new-secret-key-" + "x" * 40, SECRET_KEY_FALLBACKS=[settings.SECRET_KEY]
    ):
        sent, read, app = _limited(_scope(UPLOAD, content_length=5 * CHUNK, cookie=cookie), chunks=5)
    assert read == 5 and app.body == 5 * CHUNK and sent[0]["status"] == 200
    assert Session.objects.filter(session_key=cookie.split("=", 1)[1]).exists()


@pytest.mark.django_db
@SMALL_LIMITS
@pytest.mark.parametrize(
    "value",
    [
        "0123456789abcdefghijklmnopqrstuv",  # well-formed, no such session
        "x",  # too short to be a key
        "../../etc/passwd",
        "é" * 40,
        '"quoted;value"',
        "a" * 5000,
    ],
    ids=["unknown", "short", "path", "non-ascii", "quoted", "long"],
)
def test_a_forged_session_cookie_gets_the_general_limit(value: str, hops: list[str]) -> None:
    cookie = f"{settings.SESSION_COOKIE_NAME}={value}"
    _gets_the_general_limit(cookie)


@pytest.mark.django_db
@SMALL_LIMITS
def test_a_failing_session_check_counts_as_not_signed_in_and_logs_no_cookie(
    staff_a: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cookie = _cookie(staff_a.user)
    with override_settings(SESSION_ENGINE="no.such.session.engine"), caplog.at_level(logging.WARNING):
        sent, read, app = _limited(_scope(UPLOAD, content_length=5 * CHUNK, cookie=cookie), chunks=5)
    assert read == 0 and not app.called
    _refused_as_anonymous(sent)
    warnings = [r for r in caplog.records if r.name == "gennai.body_limit"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "ModuleNotFoundError" in warnings[0].getMessage()
    assert cookie.split("=", 1)[1] not in caplog.text


@pytest.mark.django_db
@SMALL_LIMITS
def test_requests_within_the_general_limit_cost_no_database_hop(staff_a: Any, hops: list[str]) -> None:
    cookie = _cookie(staff_a.user)
    for scope, chunks in [
        (_scope(UPLOAD, content_length=CHUNK, cookie=cookie), 1),
        (_scope(UPLOAD, cookie=cookie), 1),  # chunked, within the general limit
        (_scope(UPLOAD, method="GET", cookie=cookie), 0),  # a page view: no body
        (_scope("/chat/", content_length=5 * CHUNK, cookie=cookie), 5),  # no larger limit to grant
    ]:
        _limited(scope, chunks=chunks)
    assert hops == []
    _limited(_scope(UPLOAD, content_length=2 * CHUNK, cookie=cookie), chunks=2)
    assert len(hops) == 1  # the recording sees a hop when there is one


@pytest.mark.django_db(transaction=True)
@SMALL_LIMITS
def test_through_django_a_signed_in_upload_is_passed_on_and_an_anonymous_one_is_not(staff_a: Any) -> None:
    """The production application, Django's middleware included (its request signals close connections:
    a transactional test)."""
    cookie = _cookie(staff_a.user)
    sent, read = _drive(_scope(UPLOAD, content_length=5 * CHUNK, cookie=cookie), chunks=5)
    assert read == 5
    assert sent[0]["status"] != 413  # Django decides (here CSRF, the form carries no token)
    sent, read = _drive(_scope(UPLOAD, content_length=5 * CHUNK), chunks=5)
    assert read == 0
    _refused_as_anonymous(sent)
