"""Database hops from async code: scope, query, give the connection back.

DESIGN invariant 10: nothing waits on the network while holding a database
connection. Under ASGI, Django runs every synchronous piece of a request (its
sync middleware, ``sync_to_async`` calls) on one thread per request, and the
connection that thread opens stays checked out of the pool until the request
ends (``request_finished``). For a page that is a few milliseconds; for an SSE
chat stream or a ``/v1`` request waiting on a model it is minutes, so twenty
slow answers used to take all twenty pooled connections and every other page of
every ministry waited for one.

The rule this module implements: **async code touches the database only
through** :func:`db_hop` **or** :func:`scoped_db_hop`. Each runs one
synchronous function on the request's thread (``thread_sensitive=True``, so
the connection object stays on the thread that opened it), and afterwards
gives that thread's connection back: to the pool when one is configured,
otherwise it closes it. :class:`ReleaseConnectionsMiddleware` does the same
once the middleware stack has produced a streaming response, so the session,
user and membership lookups of the middleware do not pin a connection for the
life of the stream either. ``tests/test_connections.py`` enforces the rule
end to end and statically.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.db import connections
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from .scope import ministry_scope

P = ParamSpec("P")
T = TypeVar("T")


def release_connections() -> int:
    """Give this thread's open database connections back; return how many.

    A connection inside a transaction (``atomic`` block) is left alone: its
    owner is still using it, e.g. a test that wraps everything in a transaction.
    With a psycopg pool, ``close()`` puts the connection back into the pool;
    without one it really closes it.
    """
    released = 0
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block:
            continue
        conn.close()
        released += 1
    return released


async def db_hop(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` in the request's thread, then release its connection.

    For functions that scope themselves (services taking ``ministry_id``) or
    read platform-level tables. A function that forgets its scope still fails
    closed: the tenant manager raises ``ScopeError``.
    """

    def run() -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            release_connections()

    return await sync_to_async(run, thread_sensitive=True)()


def scoped_db_hop(fn: Callable[P, T], /, *, ministry_id: int) -> Callable[P, Awaitable[T]]:
    """:func:`db_hop` inside ``ministry_scope(ministry_id=ministry_id)``.

    ``await scoped_db_hop(conversation_list_for_actor, ministry_id=m)(actor=user)``.
    Security: ``ministry_id`` must come from the authenticated membership or API
    key captured before the async code started, never from the request.
    """

    async def hop(*args: P.args, **kwargs: P.kwargs) -> T:
        def run() -> T:
            try:
                with ministry_scope(ministry_id=ministry_id):
                    return fn(*args, **kwargs)
            finally:
                release_connections()

        return await sync_to_async(run, thread_sensitive=True)()

    return hop


class ReleaseConnectionsMiddleware:
    """Release the request thread's connection before a streaming body starts.

    Goes **first** in ``MIDDLEWARE``, so it runs after every other middleware
    has finished with the response (the session middleware may still save the
    session on the way out). For a streaming response it then closes the
    connection that the sync middleware (session, user, membership lookups)
    opened on the request's thread; the body reaches the database again only
    through :func:`db_hop`, which releases after each call. Other responses are
    sent at once and ``request_finished`` closes their connection as before.

    Under WSGI (sync mode) it does nothing: there a streaming response holds a
    whole worker thread anyway.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        assert not isinstance(response, HttpResponseBase)  # async chain: an awaitable
        result: HttpResponseBase = await response
        if result.streaming:
            await sync_to_async(release_connections, thread_sensitive=True)()
        return result
