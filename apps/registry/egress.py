"""Where the platform may connect as a model upstream (SSRF guard, invariant 8).

A deployment's ``base_url`` is typed by a procurement officer, so it is
untrusted: it must not turn the platform (the web process, or the Celery health
probe that runs every 30 s) into a client of the cloud metadata service, the
database, Redis or any internal port. Two layers, kept in step by using this
one policy:

* **URL time** (form and service): :meth:`EgressPolicy.check_url` refuses URLs
  whose host is a forbidden name, a forbidden address or not on the allowlist
  (``settings.GENNAI_UPSTREAM_ALLOWED_HOSTS``).
* **Connect time** (every HTTP connection to an upstream):
  :class:`GuardedNetworkBackend` resolves the host itself, checks every
  resolved address with :meth:`EgressPolicy.check_address` and connects to the
  checked address (Host header and TLS SNI keep the name). A name that passed
  the URL check but resolves elsewhere later (DNS rebinding) is refused before a
  single byte, and so before any API key, is sent.

Rules (docs/security.md):

1. Always refused, whatever the allowlist says: link-local (169.254.0.0/16,
   fe80::/10, which includes 169.254.169.254), cloud metadata addresses and
   names (fd00:ec2::254, metadata.google.internal, …), unspecified, multicast,
   broadcast and reserved addresses.
2. An IP-literal host must lie inside an allowlisted CIDR.
3. A host name must match an allowlisted name (exact, or a ``*.suffix``
   wildcard); each address it resolves to must be either public (globally
   routable) or inside an allowlisted CIDR. So an allowlisted vendor name that
   suddenly resolves to 10.0.0.5 or 127.0.0.1 is refused unless that network
   was allowlisted on purpose.

No proxy from the environment is used (``trust_env=False``): a proxy would
make the connect-time check see the proxy, not the upstream.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Refused whatever the allowlist says (rule 1).
ALWAYS_FORBIDDEN_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # IPv4 link-local, incl. 169.254.169.254 (AWS/GCP/Azure/OpenStack metadata)
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS IMDS over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the local host on Linux
        "::/128",  # unspecified
        "224.0.0.0/4",  # IPv4 multicast
        "ff00::/8",  # IPv6 multicast
        "240.0.0.0/4",  # reserved, incl. 255.255.255.255 broadcast
    )
)
#: Metadata service names (rule 1); compared case-insensitively without a trailing dot.
FORBIDDEN_NAMES = frozenset(
    {"metadata.google.internal", "metadata", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)


_LABEL_RE = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


class EgressRefused(Exception):
    """The platform will not connect there. ``code`` says why; the text is English, for logs."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _normalise_ip(ip: IPAddress) -> IPAddress:
    # ::ffff:169.254.169.254 is 169.254.169.254: judge the IPv4 address it maps to.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _parse_ip(host: str) -> IPAddress | None:
    try:
        return _normalise_ip(ipaddress.ip_address(host.strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


def _normalise_name(host: str) -> str:
    return host.strip().rstrip(".").lower()


@dataclass(frozen=True)
class EgressPolicy:
    """An allowlist of upstream hosts (names, ``*.suffix`` wildcards, CIDRs)."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # each starts with "."
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> EgressPolicy:
        """Build a policy from settings entries; raises ``ValueError`` on a malformed entry."""
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if entry.startswith("*."):
                suffix = _normalise_name(entry[1:])
                if suffix.count(".") < 2:  # "*.jp" or "*.internal" would allow far too much
                    raise ValueError(f"wildcard {entry!r} is too broad (needs at least two labels)")
                suffixes.append(suffix)
                continue
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                labels = _normalise_name(entry).split(".")
                if not all(_LABEL_RE.fullmatch(label) for label in labels):
                    raise ValueError(f"not a host name, wildcard or CIDR: {entry!r}") from None
                names.add(_normalise_name(entry))
            else:
                networks.append(network)
        return cls(names=frozenset(names), suffixes=tuple(suffixes), networks=tuple(networks))

    # --- rules ----------------------------------------------------------------------------

    def _allowlisted_ip(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)

    def _allowlisted_name(self, name: str) -> bool:
        return name in self.names or any(name.endswith(suffix) for suffix in self.suffixes)

    @staticmethod
    def _forbidden_ip(ip: IPAddress) -> bool:
        # Not ``is_reserved``: for IPv6 that covers ::/8 and with it ::1. Reserved space
        # that is not listed here is still refused unless allowlisted (it is not global).
        if any(ip.version == net.version and ip in net for net in ALWAYS_FORBIDDEN_NETWORKS):
            return True
        return ip.is_multicast or ip.is_unspecified or ip.is_link_local

    def lists_url(self, url: str) -> bool:
        """Whether ``url``'s host is listed here by name, wildcard or (IP literal) CIDR, unresolved."""
        host = urlsplit(url).hostname or ""
        ip = _parse_ip(host)
        if ip is not None:
            return self._allowlisted_ip(_normalise_ip(ip))
        return self._allowlisted_name(_normalise_name(host))

    def check_host(self, host: str) -> None:
        """URL-time check of a host (name or IP literal) — rules 1–3 without resolving.

        Security: the name must be allowlisted here; its addresses are checked
        again at connect time (:meth:`check_address`), so a name that later
        resolves somewhere forbidden still gets no connection.
        """
        ip = _parse_ip(host)
        if ip is not None:
            self.check_address(host, ip)
            return
        name = _normalise_name(host)
        if not name:
            raise EgressRefused("bad_url", "the URL has no host")
        if name in FORBIDDEN_NAMES:
            raise EgressRefused("forbidden", f"{name} is a cloud metadata name")
        if not self._allowlisted_name(name):
            raise EgressRefused("not_allowed", f"{name} is not in GENNAI_UPSTREAM_ALLOWED_HOSTS")

    def check_url(self, url: str) -> None:
        """URL-time check of a ``base_url`` (scheme and host)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EgressRefused("bad_url", "only http(s) URLs with a host are allowed")
        if parts.username or parts.password:
            raise EgressRefused("bad_url", "credentials in the URL are not allowed")
        self.check_host(parts.hostname)

    def check_address(self, host: str, ip: IPAddress) -> None:
        """Connect-time check of one resolved address of ``host`` (rules 1–3).

        Security: this is what stops DNS rebinding — it runs on the address the
        socket will actually connect to.
        """
        ip = _normalise_ip(ip)
        if self._forbidden_ip(ip):
            raise EgressRefused("forbidden", f"{host} → {ip}: link-local, metadata or reserved address")
        if self._allowlisted_ip(ip):
            return
        if _parse_ip(host) is not None:  # an IP literal must be inside an allowlisted CIDR
            raise EgressRefused("not_allowed", f"{ip} is not in GENNAI_UPSTREAM_ALLOWED_HOSTS")
        name = _normalise_name(host)
        if name in FORBIDDEN_NAMES:
            raise EgressRefused("forbidden", f"{name} is a cloud metadata name")
        if not self._allowlisted_name(name):
            raise EgressRefused("not_allowed", f"{name} is not in GENNAI_UPSTREAM_ALLOWED_HOSTS")
        if not ip.is_global:
            # Private, loopback, shared or documentation space behind a public-looking name.
            raise EgressRefused(
                "not_allowed", f"{name} → {ip}: a non-public address outside the allowlisted CIDRs"
            )


def onprem_policy() -> EgressPolicy:
    """The hosts a deployment may be labelled on-prem for (``GENNAI_UPSTREAM_ONPREM_HOSTS``).

    Security: routing to an on-prem deployment needs no second approval, so the
    label must not be whatever its author types: a host outside this list (for
    example an allowlisted vendor API) cannot be registered as on-prem. Unset,
    the list is the egress allowlist itself (no distinction; docs/security.md
    says to set it wherever external hosts are allowlisted).
    """
    from django.conf import settings

    entries = getattr(settings, "GENNAI_UPSTREAM_ONPREM_HOSTS", ()) or getattr(
        settings, "GENNAI_UPSTREAM_ALLOWED_HOSTS", ()
    )
    return _cached_policy(tuple(entries))


@lru_cache(maxsize=8)
def _cached_policy(entries: tuple[str, ...]) -> EgressPolicy:
    return EgressPolicy.parse(entries)


def current_policy() -> EgressPolicy:
    """The policy of ``settings.GENNAI_UPSTREAM_ALLOWED_HOSTS`` (parsed once per distinct value)."""
    from django.conf import settings

    return _cached_policy(tuple(getattr(settings, "GENNAI_UPSTREAM_ALLOWED_HOSTS", ())))


# --- Connect time ------------------------------------------------------------------------

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the event loop's getaddrinfo, no blocking)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


#: Tests replace this to simulate DNS answers (e.g. a name that rebinds to 169.254.169.254).
resolve: Resolver = system_resolve


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy allows.

    Resolves the host itself and refuses the connection if *any* resolved
    address is refused (an attacker-controlled name gets no "try the next one"),
    then connects to the checked address. httpcore still sends the original
    host name as ``Host`` and as TLS SNI (it takes both from the URL), so
    certificates are verified against the name.
    """

    def __init__(self, policy: EgressPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        literal = _parse_ip(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                async with asyncio.timeout(timeout):
                    addresses = await resolve(host, port)
            except (OSError, TimeoutError) as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {type(exc).__name__}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolved to no address")
        checked = []
        for address in addresses:
            ip = _parse_ip(address)
            if ip is None:
                raise EgressRefused("forbidden", f"{host} resolved to a non-IP answer")
            self.policy.check_address(host, ip)
            checked.append(str(ip))
        error: Exception | None = None
        for address in checked:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:  # try the next checked address
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("forbidden", "unix sockets are not upstreams")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """httpx's default TLS context (certificates and host names verified, no environment).

    Built once per process and shared by every guarded client: building one
    loads the CA bundle (≈20 ms), and a deployment's connections are spread
    over several clients (``openai_compatible.ShardedClient``).
    """
    return httpx.create_ssl_context(trust_env=False)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connections go through :class:`GuardedNetworkBackend`.

    No proxy, no environment (``trust_env=False``), no Unix sockets. httpx has
    no public hook for a network backend, so the pool it built is replaced by an
    identical one that uses ours (``tests: test_egress`` fails if httpx changes this).
    """

    def __init__(self, *, policy: EgressPolicy, limits: httpx.Limits) -> None:
        super().__init__(verify=_ssl_context(), trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetworkBackend(policy),
        )


def guarded_client(
    *, base_url: str, policy: EgressPolicy, timeout: httpx.Timeout, limits: httpx.Limits
) -> httpx.AsyncClient:
    """The only way registry code builds an HTTP client for an upstream.

    URL-time check first (refuses at once), connect-time check in the
    transport, redirects never followed (a 302 to the metadata service would
    otherwise be a second way around the allowlist).
    """
    policy.check_url(base_url)
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        timeout=timeout,
        transport=GuardedTransport(policy=policy, limits=limits),
        follow_redirects=False,
        trust_env=False,
    )
