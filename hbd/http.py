"""URLs and the bearer header, spelled once for every side of hbd's HTTP.

The daemon, its CLI and clients, the executor agent and the web page all speak
HTTP to each other with ``Authorization: Bearer TOKEN`` (``hbd.protocol``).
Building that header, checking it, and turning a host and port into a URL
live here, so that no two places can disagree (an IPv6 host in brackets, a
wildcard bind reached over loopback, a base URL without a trailing slash).
Standard library only: every layer above the core may import it.
"""

from __future__ import annotations

import hashlib
import hmac

AUTHORIZATION = "Authorization"
BEARER = "Bearer"
# Addresses that mean "every interface" when bound: nobody can connect to them,
# so a client on this host uses loopback instead.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def bearer(token: str) -> str:
    """The ``Authorization`` header's value carrying ``token``."""
    return f"{BEARER} {token}"


def auth_headers(token: str | None) -> dict[str, str]:
    """Request headers carrying ``token``; none without one."""
    return {AUTHORIZATION: bearer(token)} if token else {}


def token_matches(authorization: str | bytes | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token``, in constant time.

    Both sides are hashed first so that the comparison does not even reveal
    the token's length.
    """
    given = (
        authorization.encode("latin-1") if isinstance(authorization, str) else authorization or b""
    )
    expected = bearer(token).encode()
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest())


def host_url(host: str, port: int, scheme: str = "http") -> str:
    """``http://host:port``, with an IPv6 address in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def local_url(host: str, port: int) -> str:
    """Where a client on this host reaches a server bound to ``host:port``."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host_url(host, port)


def base_url(url: str) -> str:
    """``url`` as a base for paths: without trailing slashes."""
    return url.rstrip("/")


# Executor URL scheme -> "module:Class" of the backend serving it
# (hbd.daemon.backend.backend_for). Data only, so that settings can check a
# URL's scheme without importing the daemon; the module is imported only when
# a URL of its scheme is configured.
EXECUTOR_BACKENDS: dict[str, str] = {
    "http": "hbd.daemon.executors:ExecutorClient",
    "https": "hbd.daemon.executors:ExecutorClient",
    "ray": "hbd.daemon.ray_backend:RayBackend",
}
