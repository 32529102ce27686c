"""Who may do what in a room: keys, their hashes, and the rules for open (keyless) rooms. Sans-I/O.

Keys are random 192-bit tokens made here, so a plain SHA-256 is enough to store them (there is nothing to
brute-force that a slow hash would protect); only hashes are stored and comparisons run in constant time. An
admin key chosen by a person (given through the environment) is never stored at all.

Rooms come in two kinds. A room made with `realtime room create` or the admin API has a speaker key, and a
private one also a viewer key. An *open* room has no keys: it is made on first use, which the local quick start
(`make serve`, bound to loopback with no admin key) allows so that nobody needs a key on their own machine. Bound
to any other address, or once an admin key exists, nobody may publish without a speaker key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import unicodedata

from realtime.core.protocol import BAD_KEY, KEY_REQUIRED

ADMIN_KEY_META = "admin_key_hash"


def new_key(prefix: str) -> str:
    """A fresh key; the prefix (`sk_`, `vk_`, `ak_`) tells a person which key they are looking at."""
    return prefix + secrets.token_urlsafe(24)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_matches(key: str | None, stored_hash: str | None) -> bool:
    """Constant-time check of a presented key against a stored hash (False when either is missing)."""
    if not key or not stored_hash:
        return False
    return hmac.compare_digest(hash_key(key), stored_hash)


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_rooms_allowed(host: str, admin_key_configured: bool, public_url: str = "", requested: bool = True) -> bool:
    """Keyless rooms made on first use: only when asked for (`--open-rooms`, which `make serve` sets), and only for a
    server nobody else can reach and nobody administers (a public URL says it is reachable from elsewhere, whatever
    address it binds)."""
    return requested and is_loopback(host) and not admin_key_configured and not public_url


PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def proxied(headers) -> bool:
    """A request relayed by a reverse proxy comes from somebody else, even on a loopback-bound server: open rooms
    are not for it. nginx, Caddy and most proxies add one of these headers."""
    return any(h in headers for h in PROXY_HEADERS)


def client_address(peer: str | None, headers) -> str:
    """Who a request is from, for per-client limits. A request from a proxy on this machine (the deploy/ recipes put
    nginx or Caddy on loopback) is from the address the proxy forwards: the last X-Forwarded-For entry, which the
    proxy itself appended, or its X-Real-IP. Anyone else's forwarding headers are ignored: they could say anything."""
    if peer and is_loopback(peer):
        forwarded = (headers.get("X-Forwarded-For") or "").split(",")[-1].strip() or headers.get("X-Real-IP", "")
        if forwarded.strip():
            return forwarded.strip()[:64]
    return peer or "unknown"


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def slug(title: str, max_len: int = 48) -> str:
    """A room name from a title: "Physics 101 (Dr. Müller)" -> "physics-101-dr-muller"."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:max_len].strip("-")
    return name or "room"


class Gate:
    """The access rules of one server: whether keyless rooms may be made, who is admin, who may publish or view."""

    def __init__(self, open_rooms: bool, admin_key: str = "", admin_key_hash: str | None = None):
        self.open_rooms = open_rooms
        self._admin_hashes = [h for h in (hash_key(admin_key) if admin_key else None, admin_key_hash) if h]

    @property
    def has_admin(self) -> bool:
        return bool(self._admin_hashes)

    def is_admin(self, key: str | None) -> bool:
        return any(key_matches(key, h) for h in self._admin_hashes)

    def publish_refusal(self, speaker_key_hash: str | None, key: str | None, local: bool = True) -> str | None:
        """Why `key` may not publish in a room with this speaker key hash (an error code), or None if it may.
        `local`: the request did not come through a reverse proxy."""
        if speaker_key_hash is None:
            return None if self.open_rooms and local or self.is_admin(key) else KEY_REQUIRED
        if not key:
            return KEY_REQUIRED
        return None if key_matches(key, speaker_key_hash) or self.is_admin(key) else BAD_KEY

    def is_speaker(self, speaker_key_hash: str | None, key: str | None) -> bool:
        return key_matches(key, speaker_key_hash)

    def may_view(self, viewer_key_hash: str | None, speaker_key_hash: str | None, key: str | None) -> bool:
        """Public rooms are open to all; a private one to its viewer key, its speaker key and the admin."""
        if viewer_key_hash is None:
            return True
        return key_matches(key, viewer_key_hash) or key_matches(key, speaker_key_hash) or self.is_admin(key)
