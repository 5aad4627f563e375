"""Errors in OpenAI's shape, with bilingual messages ("日本語 / English").

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`` is what
the ``openai`` SDK and LangChain parse: the SDK maps the HTTP status to its
exception class (401 → AuthenticationError, 404 → NotFoundError, …) and shows
``message``.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """Raised inside the gateway; turned into an OpenAI-shaped response by :func:`error_response`."""

    def __init__(
        self, status: int, ja: str, en: str, *, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(en)
        self.status = status
        self.message = f"{ja} / {en}" if en else ja
        self.code = code
        self.param = param
        # Overrides of the status's usual ``type`` (e.g. ``insufficient_quota``), extra headers (Retry-After).
        self.error_type: str | None = None
        self.headers: dict[str, str] = {}


def error_body(
    message: str, *, status: int, code: str | None, param: str | None = None, error_type: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": error_type or _TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def error_parts(exc: ApiError) -> tuple[int, dict[str, str], bytes]:
    """``(status, extra headers, JSON body)`` of an error, for any HTTP front end."""
    body = json.dumps(
        error_body(exc.message, status=exc.status, code=exc.code, param=exc.param, error_type=exc.error_type),
        ensure_ascii=False,
    ).encode()
    headers = {"WWW-Authenticate": 'Bearer realm="gennai"'} if exc.status == 401 else {}
    return exc.status, {**headers, **exc.headers}, body


def error_response(exc: ApiError) -> HttpResponse:
    status, headers, body = error_parts(exc)
    return HttpResponse(body, status=status, content_type="application/json", headers=headers)


def sse_error_event(message: str, *, code: str) -> bytes:
    """The last event of a stream that failed after its first token (the SDK raises APIError on it)."""
    payload = error_body(message, status=502, code=code)
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


# --- The errors themselves ---------------------------------------------------


def missing_key() -> ApiError:
    return ApiError(
        401,
        "APIキーが指定されていません。Authorization: Bearer ヘッダーで指定してください。",
        "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
        code="invalid_api_key",
    )


def invalid_key() -> ApiError:
    return ApiError(401, "APIキーが正しくありません。", "Incorrect API key provided.", code="invalid_api_key")


def revoked_key() -> ApiError:
    return ApiError(
        401, "このAPIキーは失効しています。", "This API key has been revoked.", code="invalid_api_key"
    )


def expired_key() -> ApiError:
    return ApiError(
        401, "このAPIキーは有効期限切れです。", "This API key has expired.", code="invalid_api_key"
    )


def invalid_json() -> ApiError:
    return ApiError(
        400,
        "リクエスト本文のJSONを解析できませんでした。",
        "We could not parse the JSON body of your request.",
        code="invalid_json",
    )


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"リクエスト本文が大きすぎます（上限 {limit // 1024} KiB）。",
        f"Request body too large (limit {limit // 1024} KiB).",
        code="request_too_large",
    )


def invalid_param(param: str, ja: str, en: str, *, code: str = "invalid_value") -> ApiError:
    return ApiError(400, ja, en, code=code, param=param)


def method_not_allowed(allowed: str) -> ApiError:
    return ApiError(
        405, f"{allowed} のみ利用できます。", f"Only {allowed} is allowed.", code="method_not_allowed"
    )


def internal_error() -> ApiError:
    return ApiError(
        500,
        "内部エラーが発生しました。しばらくしてからもう一度お試しください。",
        "An internal error occurred. Please try again later.",
        code="internal_error",
    )


def invalid_level(header: str) -> ApiError:
    return ApiError(
        400,
        f"{header} ヘッダーは 1、2、3 のいずれかで指定してください。",
        f"The {header} header must be 1, 2 or 3.",
        code="invalid_confidentiality",
    )


def csrf_failed() -> ApiError:
    return ApiError(
        403,
        "CSRF検証に失敗しました。ブラウザのセッションで利用する場合は X-CSRFToken ヘッダーが必要です。",
        "CSRF verification failed. Session-authenticated requests need the X-CSRFToken header.",
        code="csrf_failed",
    )


def upstream_failed(status: int | None, *, rejected: bool) -> ApiError:
    """Our own text for an upstream failure, built from its HTTP status only.

    Security: the upstream's body is never shown to the caller (it may hold
    internal host names, deployment names or echoed secrets); it goes to the log.
    """
    if rejected:
        what = f" (HTTP {status})" if status else ""
        return ApiError(
            400,
            f"モデルサーバーがリクエストを受け付けませんでした{what}。",
            f"The model server rejected the request{what}.",
            code="upstream_rejected",
        )
    return ApiError(
        503,
        "モデルサーバーに接続できませんでした。しばらくしてからもう一度お試しください。",
        "The model server is unavailable. Please try again later.",
        code="upstream_unavailable",
    )


def upstream_interrupted() -> ApiError:
    return ApiError(
        502,
        "モデルサーバーとの接続が途中で切れました。",
        "The model server connection was lost before the answer was complete.",
        code="upstream_interrupted",
    )


def model_not_found(name: str) -> ApiError:
    return ApiError(
        404,
        f"モデル「{name}」は存在しないか、所属府省庁またはこのAPIキーで利用が許可されていません。",
        f"The model '{name}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )
