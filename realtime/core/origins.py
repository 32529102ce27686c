"""Which web pages may open our WebSockets and read our HTTP API (sans-I/O).

Browsers attach an `Origin` header to every WebSocket handshake and cross-origin request, and a WebSocket is not
covered by the same-origin policy: without a check any site could embed a room's captions, or worse, publish into
it. Non-browser clients (the Python client, curl) send no `Origin`; they are not what this guards against.

A request is allowed when it has no `Origin`, when its origin is the server's own (the page came from us), or when
the origin is on the allowlist (`--allowed-origins`), which may be `*` for any site.

"The server's own" is judged by the `Host` header, which a DNS-rebinding page controls: it points its own name at
127.0.0.1, and its requests then carry matching `Host` and `Origin` headers. `HostPolicy` closes that hole where
it matters: with open rooms only loopback names are served, and with `--public-url` only its host (and loopback,
for health checks on the machine).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize(origin: str) -> str | None:
    """`scheme://host[:port]` in canonical form (lower case, default port dropped), or None when not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") or parts.query:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is None or port == DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def parse_allowlist(spec: str) -> frozenset[str]:
    """A comma-separated list of origins, or `*`; raises ValueError naming the first entry that is not an origin."""
    allowed: set[str] = set()
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        if entry == "*":
            allowed.add("*")
            continue
        canonical = normalize(entry)
        if canonical is None:
            raise ValueError(f"allowed_origins: {entry!r} is not an origin like https://example.edu[:port] or *")
        allowed.add(canonical)
    return frozenset(allowed)


class OriginPolicy:
    def __init__(self, spec: str = ""):
        self.allowed = parse_allowlist(spec)

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a request carrying `Origin: origin` and `Host: host` may proceed."""
        if origin is None:
            return True
        canonical = normalize(origin)
        if canonical is None:  # "null" (sandboxed frames, file://) or garbage
            return "*" in self.allowed
        return same_host(canonical, host) or "*" in self.allowed or canonical in self.allowed

    def cross_origin(self, origin: str | None, host: str | None) -> bool:
        """An allowed origin other than our own: HTTP answers to it need CORS headers."""
        canonical = normalize(origin) if origin else None
        return canonical is not None and not same_host(canonical, host) and self.allows(origin, host)


def same_host(origin: str, host: str | None) -> bool:
    """The page came from this server. The scheme is not compared: behind a TLS proxy we are reached over plain
    HTTP while the page's origin is https, so the Host header (host and port) is the reliable part."""
    if not host:
        return False
    scheme = origin.split(":", 1)[0]
    return origin == normalize(f"{scheme}://{host}")


def host_name(host: str | None) -> str | None:
    """The name part of a `Host` header ("127.0.0.1:8000" -> "127.0.0.1", "[::1]:8000" -> "::1"), lower case; None
    when there is none or it is malformed."""
    if not host:
        return None
    try:
        name = urlsplit(f"http://{host.strip()}").hostname
    except ValueError:
        return None
    return name.lower() if name else None


def is_loopback_name(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostPolicy:
    """Which `Host` headers this server answers (others get 421 Misdirected Request)."""

    def __init__(self, open_rooms: bool, public_url: str = ""):
        self.public = host_name(urlsplit(public_url).netloc) if public_url else None
        self.enforced = open_rooms or self.public is not None

    def allows(self, host: str | None) -> bool:
        if not self.enforced:
            return True  # bound to a LAN address with no public URL: every name the machine has is fine
        name = host_name(host)
        return name is not None and (is_loopback_name(name) or name == self.public)
