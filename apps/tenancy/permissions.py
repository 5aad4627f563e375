"""Role checks on the active membership."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse


def require_membership(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Security: the view needs an authenticated user acting within a ministry."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if getattr(request, "membership", None) is None:
            raise PermissionDenied("no ministry membership")
        return view(request, *args, **kwargs)

    return wrapper


def require_role(*roles: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Security: the active membership must hold one of ``roles``."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            membership = getattr(request, "membership", None)
            if membership is None or not any(membership.has_role(r) for r in roles):
                raise PermissionDenied("role required")
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
